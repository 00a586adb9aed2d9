"""How the `pairs` stage turns scored samples into DPO pairs (rank_pairs is the whole policy)."""

from weightsmith.synth.pairs import rank_pairs


def test_the_best_sample_beats_the_hard_negatives_first():
    samples = ["gibberish", "runs but wrong", "right", "also wrong"]
    scores = [0.0, 0.1, 1.0, 0.1]
    pairs = rank_pairs("p", samples, scores, pairs_per_prompt=2, min_margin=0.5)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("right", "runs but wrong"), ("right", "also wrong")]
    # One pair per prompt by default: the hardest negative.
    assert [p["rejected"] for p in rank_pairs("p", samples, scores)] == ["runs but wrong"]


def test_equally_good_samples_take_turns_as_chosen():
    pairs = rank_pairs("p", ["a", "b", "x", "y"], [1.0, 1.0, 0.0, 0.0], pairs_per_prompt=4)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("a", "x"), ("b", "y")]


def test_a_reference_stands_in_only_when_no_sample_is_solved():
    unsolved = rank_pairs("p", ["wrong", "worse"], [0.1, 0.0], reference="gold", pairs_per_prompt=3)
    assert [(p["chosen"], p["rejected"]) for p in unsolved] == [("gold", "wrong"), ("gold", "worse")]
    solved = rank_pairs("p", ["right", "wrong"], [1.0, 0.1], reference="gold")
    assert [(p["chosen"], p["rejected"]) for p in solved] == [("right", "wrong")]


def test_no_pair_without_a_margin():
    assert rank_pairs("p", ["a", "b"], [1.0, 1.0]) == []
    assert rank_pairs("p", ["a", "b"], [0.1, 0.0], min_margin=0.5) == []
    assert rank_pairs("p", [], [], reference="gold") == []
