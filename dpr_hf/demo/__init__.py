"""`dpr-hf demo`: a gradio page over a QA system (needs the `demo` extra: pip install 'dpr-hf[demo]').

Importing this package does not import gradio; `build_demo` does, and says how to install it when it is missing.
"""

from .app import answer_question, available_retrievers, build_demo, highlight, load_qa

__all__ = ["answer_question", "available_retrievers", "build_demo", "highlight", "load_qa"]
