"""Halvard Flow Controls: a fictional company whose facts live in its documents.

The "bring your own documents" example (``examples/catalog/``): a parts catalog and a purchasing
policy in prose, questions about some parts for fine-tuning, and questions about other parts —
parts that appear only in the documents — to measure whether the model learned the documents'
facts in a form it can answer questions about. ``company`` draws the parts and their facts,
``render`` writes them as documents (with optional restatements, the knowledge augmentation of
Allen-Zhu & Li 2023) and questions, ``build`` writes the files.
"""

from weightsmith.domains.catalog.build import GENERATOR_VERSION, build_catalog
from weightsmith.domains.catalog.company import COMPANY, FACT_OPTIONS, Part, make_parts, split_parts
from weightsmith.domains.catalog.render import QUESTION_TYPES, answer

__all__ = ["COMPANY", "FACT_OPTIONS", "GENERATOR_VERSION", "Part", "QUESTION_TYPES", "answer", "build_catalog",
           "make_parts", "split_parts"]
