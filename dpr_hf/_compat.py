"""The import paths of dpr_hf 0.1's flat layout, kept for one release.

Each old module (`dpr_hf.indexing`, `dpr_hf.system`, ...) is served by a finder as a module that looks its names
up in the stage packages that own them now, and warns once on import. New code imports the new paths.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import types
import warnings
from typing import Any

# old module -> the modules that now own its names, searched in order
MOVED: dict[str, tuple[str, ...]] = {
    "dpr_hf.configuration": ("dpr_hf.models.configuration",),
    "dpr_hf.modeling": ("dpr_hf.models.modeling",),
    "dpr_hf.tokenization": ("dpr_hf.models.tokenization",),
    "dpr_hf.convert": ("dpr_hf.models.convert",),
    "dpr_hf.indexing": (
        "dpr_hf.index.passage_index",
        "dpr_hf.encoding",
        "dpr_hf.models.fingerprints",
        "dpr_hf.models.pair",
        "dpr_hf.atomic",
    ),
    "dpr_hf.system": ("dpr_hf.pipelines.system",),
    "dpr_hf.pipeline": ("dpr_hf.pipelines.open_domain_qa",),
    "dpr_hf.reading": ("dpr_hf.reader.decoding", "dpr_hf.models.tokenization"),
    "dpr_hf.negatives": ("dpr_hf.retrieval.negatives",),
    "dpr_hf.retriever_training": ("dpr_hf.training.retriever",),
    "dpr_hf.reader_training": ("dpr_hf.training.reader",),
    "dpr_hf.retrieval_evaluation": ("dpr_hf.evaluation.retrieval",),
    "dpr_hf.reader_evaluation": ("dpr_hf.evaluation.reader",),
}

# (old module, old name) -> its new name, where the move also renamed it
RENAMED: dict[tuple[str, str], str] = {
    # the dev-set validation of retriever training; dpr_hf.evaluation.retrieval.evaluate_retriever is another thing
    ("dpr_hf.retriever_training", "evaluate_retriever"): "evaluate_dev_pool",
}


class MovedModule(types.ModuleType):
    """An old module path: attribute lookups go to the modules that own the names now."""

    __targets__: tuple[str, ...] = ()

    def __getattr__(self, name: str) -> Any:
        name = RENAMED.get((self.__name__, name), name)
        for target in self.__targets__:
            module = importlib.import_module(target)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(
            f"module {self.__name__!r} (moved to {', '.join(self.__targets__)}) has no {name!r}"
        )

    def __dir__(self) -> list[str]:
        return sorted({name for target in self.__targets__ for name in dir(importlib.import_module(target))})


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        return importlib.machinery.ModuleSpec(fullname, self) if fullname in MOVED else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = MovedModule(spec.name)
        module.__targets__ = MOVED[spec.name]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        warnings.warn(
            f"{module.__name__} moved to {', '.join(MOVED[module.__name__])}; the old path goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
