"""Write Halvard Flow Controls' documents and questions (the catalog example's data/).

    python examples/catalog/generate.py                        # what ships in data/ (seed 0, 8 restatements)
    python examples/catalog/generate.py --restatements 1 --out /tmp/as-written   # the documents as written

The same options always write the same bytes; data/provenance.json records the options used.
The generator lives in weightsmith.domains.catalog (company.py: the parts and the policy;
render.py: documents, restatements and questions; build.py: the files).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from weightsmith.domains.catalog import build_catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "data"), help="output folder (default: data/ here)")
    parser.add_argument("--seed", type=int, default=0, help="the company, the split and the wording (default 0)")
    parser.add_argument("--restatements", type=int, default=8,
                        help="times the pre-training text states each part's facts; 1 = the catalog as written (default 8)")
    parser.add_argument("--parts", type=int, default=120, help="parts in the catalog (default 120)")
    parser.add_argument("--heldout", type=int, default=30, help="parts no training question asks about (default 30)")
    parser.add_argument("--questions-per-fact", type=int, default=3, help="training questions per part and fact (default 3)")
    parser.add_argument("--answers", choices=("sentence", "short"), default="sentence",
                        help="answers that restate the part then give the fact ('BV-4417 is made of bronze.'), "
                        "or the fact alone ('bronze') (default sentence)")
    args = parser.parse_args()
    paths = build_catalog(args.out, seed=args.seed, restatements_per_part=args.restatements, n_parts=args.parts,
                          n_heldout=args.heldout, questions_per_fact=args.questions_per_fact, answers=args.answers)
    for name, path in paths.items():
        print(f"{name:>13}: {path}")


if __name__ == "__main__":
    main()
