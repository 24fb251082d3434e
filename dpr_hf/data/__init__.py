"""Data loading: every supported format becomes one canonical `datasets.Dataset` schema.

- `load_retriever_data`: question, answers, positive/negative/hard-negative passages (retriever training).
- `load_passages`: a corpus of `{id, title, text}`; `split_documents` cuts documents into 100-word passages.
- `load_questions`: id, question, answers, gold passage id (evaluation).
- `load_beir`: a BEIR dataset (local folder or Hub) -> corpus, queries and qrels; `beir_retriever_data` turns
  its judgements into retriever training data (positives by passage id); `squad_to_beir` converts SQuAD.
- `save_retriever_json`: DPR's retriever JSON, readable by the original DPR tools.
Bad input raises `dpr_hf.errors.DPRDataError` naming the file, the record and the field.
"""

from .beir import BeirData, beir_retriever_data, load_beir, load_qrels
from .beir_convert import save_beir, squad_to_beir
from .passages import load_passages, split_documents
from .questions import load_questions, parse_answer_list
from .retriever import load_retriever_data, save_retriever_json
from .schema import PASSAGE_FEATURES, QUESTION_FEATURES, RETRIEVER_FEATURES, passage_id

__all__ = [
    "BeirData",
    "PASSAGE_FEATURES",
    "QUESTION_FEATURES",
    "RETRIEVER_FEATURES",
    "beir_retriever_data",
    "load_beir",
    "load_passages",
    "load_qrels",
    "load_questions",
    "load_retriever_data",
    "parse_answer_list",
    "passage_id",
    "save_beir",
    "save_retriever_json",
    "split_documents",
    "squad_to_beir",
]
