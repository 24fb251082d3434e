"""The files of a Hugging Face Space that serves the demo page of a QA system published on the Hub.

A Space runs `python app.py` after installing `requirements.txt`; its `README.md` metadata names the gradio SDK and
the model repo. The app loads the system from its Hub repo when the Space starts (`dpr-hf push --space` uploads
these files; `write_space` alone lays them out to inspect or upload by hand).
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

from huggingface_hub import SpaceCard, SpaceCardData

DEFAULT_REQUIREMENTS = ("dpr-hf[demo]",)
APP_TEMPLATE = '''"""Demo page of the open-domain QA system {repo_id} (dpr-hf); written by `dpr-hf push --space`."""

from dpr_hf.demo import build_demo

demo = build_demo({repo_id!r})

if __name__ == "__main__":
    demo.launch()
'''
CARD_TEMPLATE = """
# {title}

Ask a question: the [{repo_id}](https://huggingface.co/{repo_id}) system retrieves passages (dense, BM25 or hybrid),
reads them with its extractive reader and shows the answer highlighted in its passage, with the passages read.

Run it locally: `pip install 'dpr-hf[demo]' && dpr-hf demo {repo_id}`.
"""


def _gradio_version() -> str | None:
    try:
        return metadata.version("gradio")
    except metadata.PackageNotFoundError:
        return None


def write_space(
    folder: str | os.PathLike,
    system_repo_id: str,
    requirements: list[str] | tuple[str, ...] = DEFAULT_REQUIREMENTS,
    title: str | None = None,
    license: str = "apache-2.0",
) -> Path:
    """Write `app.py`, `requirements.txt` and `README.md` of a Space serving `system_repo_id`'s demo into `folder`.

    Args:
        requirements: pip requirement lines installing dpr_hf with its `demo` extra (a pinned version, or
            `dpr-hf[demo] @ git+https://...` where dpr-hf is not on PyPI).
        title: the Space's title (default: "<repo name> demo").
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not requirements:
        raise ValueError("a Space needs at least one requirement: the one that installs dpr-hf[demo]")
    title = title or f"{system_repo_id.split('/')[-1]} demo"
    (folder / "app.py").write_text(APP_TEMPLATE.format(repo_id=system_repo_id))
    (folder / "requirements.txt").write_text("".join(f"{line}\n" for line in requirements))
    card_data = SpaceCardData(
        title=title,
        sdk="gradio",
        sdk_version=_gradio_version(),
        app_file="app.py",
        license=license,
        models=[system_repo_id],
        tags=["dpr", "open-domain-qa", "dpr-hf"],
    )
    card = SpaceCard(
        f"---\n{card_data.to_yaml()}\n---\n" + CARD_TEMPLATE.format(title=title, repo_id=system_repo_id)
    )
    card.save(folder / "README.md")
    return folder
