"""Publishing: exactly which files and which rendered model cards would be uploaded (only the upload calls are
replaced; the Hub cannot be reached from the tests)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from datasets import load_from_disk
from huggingface_hub import HfApi, ModelCard
from tiny_qa_system import build_tiny_system

from dpr_hf.cli import main as cli_main
from dpr_hf.hub import DPR_CITATION, LARGE_FOLDER_BYTES, LARGE_FOLDER_FILES, push_system, render_card


@pytest.fixture(scope="module")
def system(tokenizer, tiny_bert_config):
    return build_tiny_system(tokenizer, tiny_bert_config, with_bm25=False)


@pytest.fixture(scope="module")
def system_dir(system, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hub") / "system"
    system.save_pretrained(path)
    return path


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def uploads(monkeypatch) -> list[dict]:
    """Record what each upload would send: the repo, its settings, the files and the README at call time."""
    calls: list[dict] = []
    created: dict[str, bool | None] = {}

    def create_repo(self, repo_id, *, private=None, exist_ok=False, **kwargs):
        created[repo_id] = private
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, **kwargs):
        folder = Path(folder_path)
        calls.append(
            {
                "repo_id": repo_id,
                "private": created[repo_id],
                "files": _files(folder),
                "bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
                "passage_columns": load_from_disk(str(folder / "index" / "passages")).column_names
                if (folder / "index" / "passages").is_dir()
                else None,
                "readme": (folder / "README.md").read_text(),
                "training_args": (folder / "training_args.json").read_text()
                if (folder / "training_args.json").exists()
                else None,
                "commit_message": commit_message,
                "folder": folder,
            }
        )
        return f"commit for {repo_id}"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def test_push_uploads_the_system_folder_and_its_card(system_dir, uploads):
    before = _files(system_dir)
    result = push_system(system_dir, "me/dpr-tiny", private=True, datasets=["rajpurkar/squad"])
    assert result == {"system": "commit for me/dpr-tiny"}
    [call] = uploads
    assert call["repo_id"] == "me/dpr-tiny" and call["private"] is True
    assert call["files"] == before | {"README.md"}
    assert _files(system_dir) == before  # the card goes only into the staged copy
    assert not call["folder"].exists()  # the staging folder is cleaned up

    card = ModelCard(call["readme"])
    data = card.data.to_dict()
    assert data["library_name"] == "dpr-hf"
    assert data["pipeline_tag"] == "question-answering"
    assert {"dpr", "dense-passage-retrieval", "open-domain-qa"} <= set(data["tags"])
    assert data["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert data["datasets"] == ["rajpurkar/squad"] and data["license"] == "apache-2.0"
    assert set(data["metrics"]) == {"accuracy", "exact_match", "f1"}
    results = {(r.metric_type, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert results[("top_20_accuracy", "Top-20 accuracy")] == 75.0
    assert results[("exact_match", "EM reading top-5 passages")] == 40.0
    assert results[("f1", "F1 reading top-1 passages")] == 30.5
    assert all(r.dataset_type == "rajpurkar/squad" for r in card.data.eval_results)
    body = card.text
    for expected in (
        "question encoder",
        "passage encoder",
        "[CLS] title [SEP] text [SEP]",
        "dot product",
        'pipeline("open-domain-qa", model="me/dpr-tiny")',
        'pipeline(model="me/dpr-tiny", trust_remote_code=True)',
        'QASystem.from_pretrained("me/dpr-tiny")',
        "| top_20 | 75.00 |",
        "| 5 | 40.00 | 45.25 |",
        "1 hard negative(s) per question",
        "| `per_device_train_batch_size` | `32` |",
        "## Limitations",
        DPR_CITATION,
    ):
        assert expected in body, expected


def test_push_says_what_it_uploads_and_the_index_goes_up_without_raw_vectors(system_dir, uploads, capsys):
    push_system(system_dir, "me/dpr-tiny")
    [call] = uploads
    expected_bytes = sum(p.stat().st_size for p in system_dir.rglob("*") if p.is_file()) + len(
        call["readme"].encode()
    )
    assert call["bytes"] == expected_bytes
    printed = capsys.readouterr().out
    assert (
        f"uploading {len(call['files'])} files, {expected_bytes / 1e9:.3f} GB ({expected_bytes} bytes) "
        "to me/dpr-tiny with upload_folder\n"
    ) in printed
    # The vectors go up once, inside index.faiss: passages/ carries no float32 embeddings column.
    assert call["passage_columns"] == ["id", "title", "text"]
    assert "index/index.faiss" in call["files"]


def _big_system(system_dir: Path, tmp_path: Path, by: str) -> Path:
    """The tiny system plus files that make it large: one sparse file just over the byte limit, or many files."""
    folder = tmp_path / "system"
    shutil.copytree(system_dir, folder)
    if by == "bytes":
        with open(folder / "index" / "big.bin", "wb") as handle:
            handle.truncate(LARGE_FOLDER_BYTES + 1)  # sparse: no disk used, hard-linked when staged
    else:
        (folder / "many").mkdir()
        for i in range(LARGE_FOLDER_FILES):
            (folder / "many" / f"{i}.txt").write_text(str(i))
    return folder


@pytest.mark.parametrize("by", ["bytes", "files"])
def test_large_folder_goes_up_through_the_large_folder_upload(
    system_dir, tmp_path, uploads, monkeypatch, capsys, by
):
    folder = _big_system(system_dir, tmp_path, by)
    files = _files(folder) | {"README.md"}
    # huggingface_hub >= 2.0 (installed here): upload_folder is the large-folder upload (batched commits).
    assert not hasattr(HfApi, "upload_large_folder")
    push_system(folder, "me/big")
    [call] = uploads
    assert call["files"] == files
    printed = capsys.readouterr().out
    assert f"uploading {len(files)} files" in printed
    assert "to me/big with upload_folder (resumable: rerun the same command if it stops)" in printed
    # huggingface_hub < 2.0 has upload_large_folder: it is used instead of one upload_folder commit.
    large = []

    def upload_large_folder(self, *, repo_id, folder_path, repo_type, **kwargs):
        large.append((repo_id, repo_type, _files(Path(folder_path))))
        return None

    monkeypatch.setattr(HfApi, "upload_large_folder", upload_large_folder, raising=False)
    push_system(folder, "me/big")
    assert large == [("me/big", "model", files)] and len(uploads) == 1
    assert "to me/big with upload_large_folder (resumable" in capsys.readouterr().out


def test_a_small_folder_stays_one_upload_folder_commit(system_dir, uploads, monkeypatch):
    monkeypatch.setattr(HfApi, "upload_large_folder", lambda *a, **k: pytest.fail("not large"), raising=False)
    push_system(system_dir, "me/small")
    assert len(uploads) == 1


def test_separate_encoders_get_their_own_repos_and_partner_cards(system_dir, uploads):
    push_system(system_dir, "me/dpr-tiny", separate_encoders=True)
    by_repo = {call["repo_id"]: call for call in uploads}
    assert list(by_repo) == ["me/dpr-tiny", "me/dpr-tiny-question-encoder", "me/dpr-tiny-passage-encoder", "me/dpr-tiny-reader"]  # fmt: skip
    for repo, part, run in (
        ("me/dpr-tiny-question-encoder", "question_encoder", "retriever"),
        ("me/dpr-tiny-passage-encoder", "passage_encoder", "retriever"),
        ("me/dpr-tiny-reader", "reader", "reader"),
    ):
        call = by_repo[repo]
        assert call["files"] == _files(system_dir / part) | {"README.md", "training_args.json"}
        assert call["training_args"] == (system_dir / "training_args" / f"{run}.json").read_text()
    question_card = ModelCard(by_repo["me/dpr-tiny-question-encoder"]["readme"])
    assert question_card.data.pipeline_tag == "feature-extraction"
    assert question_card.data.library_name == "transformers"
    assert "**question encoder** (E_Q)" in question_card.text
    assert (
        "[me/dpr-tiny-passage-encoder](https://huggingface.co/me/dpr-tiny-passage-encoder)"
        in question_card.text
    )
    assert "`[CLS] question [SEP]`" in question_card.text
    passage_card = ModelCard(by_repo["me/dpr-tiny-passage-encoder"]["readme"])
    assert (
        "[me/dpr-tiny-question-encoder](https://huggingface.co/me/dpr-tiny-question-encoder)"
        in passage_card.text
    )
    assert "segment ids all zero" in passage_card.text
    reader_card = ModelCard(by_repo["me/dpr-tiny-reader"]["readme"])
    assert {r.metric_type for r in reader_card.data.eval_results} == {"exact_match", "f1"}
    # The reader was trained from a local folder: a path is not a Hub id, so no base_model.
    assert reader_card.data.base_model is None
    assert "me/dpr-tiny-reader" in by_repo["me/dpr-tiny"]["readme"]  # the system card links the parts


def test_push_to_hub_on_the_system_object(system, uploads):
    system.push_to_hub("me/from-object", license="mit")
    [call] = uploads
    assert {"config.json", "question_encoder/model.safetensors", "index/index.faiss", "README.md"} <= call[
        "files"
    ]
    assert ModelCard(call["readme"]).data.license == "mit"


def test_cli_push(system_dir, uploads, capsys):
    code = cli_main(
        ["push", str(system_dir), "me/cli-tiny", "--separate-encoders", "--private", "--datasets", "squad"]
    )
    assert code == 0
    assert [call["repo_id"] for call in uploads][0] == "me/cli-tiny" and all(
        call["private"] for call in uploads
    )
    assert "https://huggingface.co/me/cli-tiny-reader" in capsys.readouterr().out
    assert cli_main(["push", str(system_dir / "question_encoder"), "me/wrong"]) == 2  # not a system folder


def test_card_without_metrics_says_so(system_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((system_dir / "config.json").read_text())
    card = render_card(bare, "system", {"system": "me/bare"})
    assert card.data.eval_results is None and card.data.base_model is None
    assert "No evaluation results were saved" in card.text
    with pytest.raises(ValueError, match="part must be one of"):
        render_card(system_dir, "retriever")


def test_encoder_cards_state_a_cosine_pairs_normalisation_and_temperature(system_dir, tmp_path):
    cosine = tmp_path / "cosine"
    shutil.copytree(system_dir, cosine)
    for tower in ("question_encoder", "passage_encoder"):
        config = json.loads((cosine / tower / "config.json").read_text())
        (cosine / tower / "config.json").write_text(
            json.dumps({**config, "normalize": True, "temperature": 0.05})
        )
    for part in ("question_encoder", "passage_encoder"):
        text = render_card(cosine, part, {"system": "me/cos"}).text
        assert (
            "L2-normalised" in text and "trained as dot product / 0.05" in text and "not cosine" not in text
        )
        plain = render_card(system_dir, part, {"system": "me/dot"}).text
        assert "not cosine" in plain and "trained as" not in plain


def test_wheel_ships_every_module_and_the_card_templates(tmp_path):
    """A non-editable install finds the model-card templates: they ship as `dpr_hf/model_cards/`, and the
    explicit package list in pyproject.toml misses no subpackage."""
    repo = Path(__file__).resolve().parents[1]
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(repo),
            "-w",
            tmp_path,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("dpr_hf-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    sources = {str(p.relative_to(repo)) for p in (repo / "dpr_hf").rglob("*.py")}
    templates = {f"dpr_hf/model_cards/{p.name}" for p in (repo / "model_cards").glob("*.md")}
    assert sources | templates | {"dpr_hf/py.typed"} <= shipped
    assert {"dpr_hf/model_cards/system.md", "dpr_hf/model_cards/reader.md"} <= templates

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = "import dpr_hf.hub as h; print(h.__file__); print(h.TEMPLATE_DIR)"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    module, template_dir = out.stdout.split()
    assert Path(module).is_relative_to(site)
    assert Path(template_dir) == site / "dpr_hf" / "model_cards"
