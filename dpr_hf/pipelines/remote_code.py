"""The remote code of a saved system: the serving modules, flattened into the system folder at save time.

transformers' remote-code loader only follows single-dot imports between files of one folder. Rather than force
the package into that shape, `write_remote_code` copies the entry modules and every dpr_hf module they import
(relatively, at any depth) into one folder and rewrites those imports to single-dot ones. The result is one flat,
self-contained folder, so `pipeline(model=folder_or_repo, trust_remote_code=True)` works where dpr_hf is not
installed. Imports of dpr_hf by absolute name (optional extras such as BM25) are left as they are.
"""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# entry module -> the name it gets in the saved folder (what `auto_map` / `custom_pipelines` refer to)
ENTRY_MODULES = {"pipelines/system.py": "system", "pipelines/open_domain_qa.py": "pipeline"}
_RELATIVE_IMPORT = re.compile(r"^(?P<indent>[ \t]*)from (?P<dots>\.+)(?P<module>[\w.]*) import", re.M)


def _imported_file(importer: Path, dots: str, module: str) -> Path:
    base = importer.parent
    for _ in range(len(dots) - 1):
        base = base.parent
    target = base.joinpath(*module.split(".")) if module else base
    if target.with_suffix(".py").is_file():
        return target.with_suffix(".py")
    raise ImportError(
        f"{importer.relative_to(PACKAGE_DIR)} imports {dots}{module}, which is not a module file: code served as "
        "remote code imports from the module that defines a name, not from a package"
    )


def write_remote_code(folder: Path) -> list[str]:
    """Write the flattened serving modules into `folder`; returns their file names."""
    names = {PACKAGE_DIR / entry: name for entry, name in ENTRY_MODULES.items()}
    sources: dict[Path, str] = {}
    todo = list(names)
    while todo:
        file = todo.pop()
        if file in sources:
            continue

        def flatten(match: re.Match, importer: Path = file) -> str:
            target = _imported_file(importer, match["dots"], match["module"])
            todo.append(target)
            return f"{match['indent']}from .{names.setdefault(target, target.stem)} import"

        sources[file] = _RELATIVE_IMPORT.sub(flatten, file.read_text())
    taken: dict[str, Path] = {}
    for file in sources:
        if taken.setdefault(names[file], file) != file:
            raise ImportError(
                f"two served modules flatten to {names[file]}.py: {taken[names[file]]} and {file}"
            )
    for file, source in sources.items():
        (folder / f"{names[file]}.py").write_text(source)
    return sorted(f"{names[file]}.py" for file in sources)
