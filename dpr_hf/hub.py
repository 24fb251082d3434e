"""Publishing QA systems on the Hugging Face Hub, with model cards rendered from the templates in `model_cards/`.

A system goes up as one repo (the folder as saved, plus its card). On request the two encoders and the reader also
go up as their own repos (`{repo_id}-question-encoder`, `{repo_id}-passage-encoder`, `{repo_id}-reader`), as the
original DPR checkpoints were published, each card naming its partner tower. A folder over 1 GB or 1,000 files
(a system with a big index) goes up through the Hub's large-folder upload: several commits, resumable by rerunning.
`push_space` publishes a gradio Space serving the system's demo page (`dpr-hf demo`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from .evaluation.ir_metrics import ALIASES as IR_ALIASES

# Installed from a wheel the templates ship as `dpr_hf/model_cards/`; in a source checkout they are `model_cards/`.
_PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATE_DIR = next(
    (d for d in (_PACKAGE_DIR / "model_cards", _PACKAGE_DIR.parent / "model_cards") if d.is_dir()),
    _PACKAGE_DIR / "model_cards",
)
PARTS = ("system", "question_encoder", "passage_encoder", "reader")
REPO_SUFFIXES = {
    "question_encoder": "-question-encoder",
    "passage_encoder": "-passage-encoder",
    "reader": "-reader",
}
PIPELINE_TAGS = {
    "system": "question-answering",
    "question_encoder": "feature-extraction",
    "passage_encoder": "feature-extraction",
    "reader": "question-answering",
}
TAGS = ["dpr", "dense-passage-retrieval", "open-domain-qa", "dpr-hf", "custom_code"]
# Training settings a card reports, in this order, when training_args.json has them.
TRAINING_KEYS = (
    "model_name_or_path",
    "train_file",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "warmup_steps",
    "weight_decay",
    "num_hard_negatives",
    "num_other_negatives",
    "similarity",
    "temperature",
    "passages_per_question",
    "max_length",
    "question_max_length",
    "passage_max_length",
    "mixed_precision",
    "seed",
)
DPR_CITATION = """@inproceedings{karpukhin-etal-2020-dense,
    title = "Dense Passage Retrieval for Open-Domain Question Answering",
    author = "Karpukhin, Vladimir and Oguz, Barlas and Min, Sewon and Lewis, Patrick and Wu, Ledell and
      Edunov, Sergey and Chen, Danqi and Yih, Wen-tau",
    booktitle = "Proceedings of the 2020 Conference on Empirical Methods in Natural Language Processing (EMNLP)",
    year = "2020",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/2020.emnlp-main.550",
    doi = "10.18653/v1/2020.emnlp-main.550",
    pages = "6769--6781",
}"""
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
# Above either, one commit is at risk (the Hub caps a commit's size and file count; a failure late in a one-commit
# upload loses all of it), so the folder goes up through the large-folder upload instead.
LARGE_FOLDER_BYTES = 1_000_000_000
LARGE_FOLDER_FILES = 1_000


def part_repo_ids(repo_id: str, separate_encoders: bool = False) -> dict[str, str]:
    """Repo id of each part that gets its own repo: the system always, the towers and reader on request."""
    repos = {"system": repo_id}
    if separate_encoders:
        repos.update({part: repo_id + suffix for part, suffix in REPO_SUFFIXES.items()})
    return repos


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _hub_id(name: Any) -> str | None:
    """`name` if it can be a Hub repo id (a local path cannot be a card's `base_model`)."""
    if isinstance(name, str) and _REPO_ID.match(name) and not os.path.exists(name):
        return name
    return None


def _tower_info(folder: Path) -> dict[str, Any]:
    config = _read_json(folder / "config.json")
    encoder = config.get("encoder") or {}
    return {
        "model_type": config.get("model_type"),
        "backbone": encoder.get("model_type"),
        "backbone_name": encoder.get("_name_or_path"),
        "layers": encoder.get("num_hidden_layers"),
        "hidden_size": encoder.get("hidden_size"),
        "pooling": config.get("pooling"),
        "projection_dim": config.get("projection_dim") or 0,
        "normalize": bool(config.get("normalize")),
        "temperature": config.get("temperature", 1.0),
    }


def _retrieval_rows(metrics: dict) -> list[tuple[str, float]]:
    def order(key: str) -> tuple[str, int]:
        name, _, k = key.replace("@", "_").rpartition("_")
        return (name, int(k)) if k.isdigit() else (key, 0)

    rows = [
        (key, value)
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and not key.startswith("num_") and key not in IR_ALIASES
    ]
    return sorted(rows, key=lambda row: order(row[0]))


def _reader_rows(metrics: dict) -> list[tuple[str, float, float]]:
    em, f1 = metrics.get("em", {}), metrics.get("f1", {})
    return [(n, em[n], f1.get(n)) for n in sorted(em, key=int)]


def _eval_results(part: str, retrieval: dict, reader: dict, dataset: str) -> list[EvalResult]:
    """model-index entries: top-k retrieval accuracy and nDCG@10 / Recall@100 (given qrels) for the retriever
    parts, EM/F1 for the reader parts."""
    results = []
    if part in ("system", "question_encoder", "passage_encoder"):
        for key, value in _retrieval_rows(retrieval):
            if key.startswith("top_"):
                metric = (f"top_{key[4:]}_accuracy", f"Top-{key[4:]} accuracy", round(float(value), 2))
            elif key in ("ndcg@10", "recall@100"):  # BEIR's headline metrics, named as MTEB's cards name them
                name, k = key.split("@")
                label = f"{'nDCG' if name == 'ndcg' else 'Recall'}@{k}"
                metric = (f"{name}_at_{k}", label, round(float(value), 4))
            else:
                continue
            results.append(
                EvalResult(
                    task_type="text-retrieval",
                    task_name="Passage retrieval",
                    dataset_type=dataset,
                    dataset_name=dataset,
                    metric_type=metric[0],
                    metric_name=metric[1],
                    metric_value=metric[2],
                )
            )
    if part in ("system", "reader"):
        for n, em, f1 in _reader_rows(reader):
            for metric, value in (("exact_match", em), ("f1", f1)):
                results.append(
                    EvalResult(
                        task_type="question-answering",
                        task_name="Open-domain question answering",
                        dataset_type=dataset,
                        dataset_name=dataset,
                        metric_type=metric,
                        metric_name=f"{'EM' if metric == 'exact_match' else 'F1'} reading top-{n} passages",
                        metric_value=round(float(value), 2),
                    )
                )
    return results


def render_card(
    system_dir: str | os.PathLike,
    part: str = "system",
    repo_ids: dict[str, str] | None = None,
    license: str = "apache-2.0",
    datasets: list[str] | None = None,
    base_model: str | None = None,
    eval_dataset: str | None = None,
    template_dir: str | os.PathLike = TEMPLATE_DIR,
) -> ModelCard:
    """The model card of one part of a saved system, from `model_cards/{part}.md` and the folder's JSON files.

    Args:
        part: "system", "question_encoder", "passage_encoder" or "reader".
        repo_ids: repo id of each published part (see `part_repo_ids`), for usage snippets and partner links.
        license / datasets: card metadata (`datasets`: Hub dataset ids the models were trained on).
        base_model: Hub id of the pretrained backbone; default: the training `model_name_or_path` if it is a
            Hub id (a local path is left out).
        eval_dataset: dataset named in `model-index`; default: the first of `datasets`, else "custom".
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    folder = Path(system_dir)
    config = _read_json(folder / "config.json")
    repo_ids = repo_ids or {"system": folder.name}
    metrics = {name: _read_json(folder / "metrics" / f"{name}.json") for name in ("retrieval", "reader")}
    training = {
        name: _read_json(folder / "training_args" / f"{name}.json") for name in ("retriever", "reader")
    }
    run = training["reader" if part == "reader" else "retriever"]
    base_model = base_model or _hub_id(run.get("model_name_or_path"))
    dataset = eval_dataset or (datasets[0] if datasets else "custom")
    card_data = ModelCardData(
        library_name="dpr-hf" if part == "system" else "transformers",
        pipeline_tag=PIPELINE_TAGS[part],
        tags=TAGS
        + (["question-encoder"] if part == "question_encoder" else [])
        + (["passage-encoder"] if part == "passage_encoder" else []),
        base_model=base_model,
        datasets=datasets,
        license=license,
        metrics=(["accuracy"] if part != "reader" and metrics["retrieval"] else [])
        + (["exact_match", "f1"] if part in ("system", "reader") and metrics["reader"] else []),
        model_name=repo_ids.get(part, repo_ids["system"]),
        eval_results=_eval_results(part, metrics["retrieval"], metrics["reader"], dataset) or None,
    )
    index_manifest = _read_json(folder / (config.get("index") or "index") / "manifest.json")
    return ModelCard.from_template(
        card_data,
        template_path=str(Path(template_dir) / f"{part}.md"),
        repo_id=repo_ids.get(part, repo_ids["system"]),
        repo_ids=repo_ids,
        config=config,
        question_encoder=_tower_info(folder / (config.get("question_encoder") or "question_encoder")),
        passage_encoder=_tower_info(folder / (config.get("passage_encoder") or "passage_encoder")),
        reader=_tower_info(folder / (config.get("reader") or "reader")),
        has_passage_encoder=bool(config.get("passage_encoder")),
        index=index_manifest,
        training={
            name: [(k, args[k]) for k in TRAINING_KEYS if k in args] for name, args in training.items()
        },
        hard_negatives=training["retriever"].get("num_hard_negatives"),
        batch_size=training["retriever"].get("per_device_train_batch_size"),
        retrieval_rows=_retrieval_rows(metrics["retrieval"]),
        reader_rows=_reader_rows(metrics["reader"]),
        num_questions={name: metrics[name].get("num_questions") for name in metrics},
        eval_dataset=dataset,
        citation=DPR_CITATION,
    )


def _stage(source: Path, target: Path) -> None:
    """Lay out a folder to upload without copying weights: hard links where the filesystem allows."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy)


def folder_contents(folder: str | os.PathLike) -> tuple[list[str], int]:
    """The files an upload of `folder` sends (relative paths, sorted) and their total size in bytes."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return [str(p.relative_to(folder)) for p in files], sum(p.stat().st_size for p in files)


def is_large_folder(num_files: int, num_bytes: int) -> bool:
    return num_bytes > LARGE_FOLDER_BYTES or num_files > LARGE_FOLDER_FILES


def upload(api: HfApi, repo_id: str, folder: Path, commit_message: str) -> Any:
    """Upload one staged folder, saying first how many files and bytes go up, and how.

    A large folder uses `upload_large_folder` where this huggingface_hub has it (before 2.0); from 1.20 on,
    `upload_folder` itself commits a large folder in batches and resumes a rerun when hf_xet is installed (2.0
    dropped `upload_large_folder` for it), so there it needs hf_xet.
    """
    files, num_bytes = folder_contents(folder)
    large = is_large_folder(len(files), num_bytes)
    method = "upload_large_folder" if large and hasattr(api, "upload_large_folder") else "upload_folder"
    if large and method == "upload_folder" and importlib.util.find_spec("hf_xet") is None:
        raise RuntimeError(
            f"{folder.name}: {len(files)} files, {num_bytes / 1e9:.2f} GB is a large upload, which this "
            "huggingface_hub splits into resumable commits only with hf_xet: pip install hf_xet"
        )
    print(
        f"uploading {len(files)} files, {num_bytes / 1e9:.3f} GB ({num_bytes} bytes) to {repo_id} with {method}"
        + (" (resumable: rerun the same command if it stops)" if large else ""),
        flush=True,
    )
    if method == "upload_large_folder":
        return api.upload_large_folder(repo_id=repo_id, folder_path=folder, repo_type="model")
    return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)


def push_system(
    system_dir: str | os.PathLike,
    repo_id: str,
    separate_encoders: bool = False,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload QA system with dpr-hf",
    **card_kwargs,
) -> dict[str, Any]:
    """Upload a saved system folder to `repo_id` with its model card (README.md).

    With `separate_encoders=True`, the question encoder, passage encoder and reader also get their own repos
    (see `part_repo_ids`), each with its `training_args.json` and card. `card_kwargs` go to `render_card`
    (`license`, `datasets`, `base_model`, `eval_dataset`). Prints each part's file count and bytes before its
    upload starts (see `upload`). Returns each part's upload result.
    """
    folder = Path(system_dir)
    config = _read_json(folder / "config.json")
    if config.get("model_type") != "dpr_hf_qa_system":
        raise FileNotFoundError(
            f"{folder} is not a saved QA system folder (config.json of a dpr_hf_qa_system)"
        )
    repos = part_repo_ids(repo_id, separate_encoders)
    missing = [part for part in repos if part != "system" and not config.get(part)]
    if missing:
        raise FileNotFoundError(f"{folder} has no {missing} to push as separate repos")
    api = HfApi(token=token)
    results = {}
    with tempfile.TemporaryDirectory(prefix=".push-", dir=folder.parent) as tmp:
        for part, part_repo in repos.items():
            stage = Path(tmp) / part
            if part == "system":
                _stage(folder, stage)
            else:
                _stage(folder / config[part], stage)
                run = "reader" if part == "reader" else "retriever"
                args_file = folder / "training_args" / f"{run}.json"
                if args_file.exists():
                    (stage / "training_args.json").unlink(missing_ok=True)  # never write through a hard link
                    shutil.copy2(args_file, stage / "training_args.json")
            (stage / "README.md").unlink(missing_ok=True)
            render_card(folder, part, repos, **card_kwargs).save(stage / "README.md")
            api.create_repo(part_repo, private=private, exist_ok=True)
            results[part] = upload(api, part_repo, stage, commit_message)
    return results


def push_space(
    system_repo_id: str,
    space_id: str,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload dpr-hf demo Space",
    **space_kwargs,
) -> Any:
    """Create (or update) the gradio Space `space_id` serving the demo page of the system `system_repo_id`.

    `space_kwargs` go to `dpr_hf.demo.space.write_space` (`requirements`, `title`, `license`). Returns the
    `upload_folder` result. A Space downloads a private system repo only with a token: set the Space's `HF_TOKEN`
    secret.
    """
    from .demo.space import write_space

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix=".space-") as tmp:
        folder = write_space(Path(tmp) / "space", system_repo_id, **space_kwargs)
        api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        return api.upload_folder(
            repo_id=space_id, repo_type="space", folder_path=folder, commit_message=commit_message
        )
