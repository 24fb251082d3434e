"""The demo page (`dpr-hf demo`) on the tiny QA system: its functions, the page served on 127.0.0.1 and driven through
gradio_client, the command, the Space `dpr-hf push --space` uploads (its app run as a Space runs it), and one check in
headless Chromium (marked `browser`; `make test-browser` installs Chromium)."""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio", reason="the demo extra is not installed: pip install 'dpr-hf[demo]'")
gradio_client = pytest.importorskip("gradio_client")

import httpx  # noqa: E402  (gradio's own HTTP client: present whenever gradio is)
from cli_runs import REPO, cli_command, subprocess_env  # noqa: E402
from huggingface_hub import HfApi, SpaceCard  # noqa: E402
from tiny_qa_system import QUESTIONS, build_tiny_system, hub_cache_snapshot  # noqa: E402

from dpr_hf import QASystem  # noqa: E402
from dpr_hf.cli import main as cli_main  # noqa: E402
from dpr_hf.demo import answer_question, build_demo, highlight, load_qa  # noqa: E402
from dpr_hf.demo.app import PASSAGE_HEADERS  # noqa: E402

EXAMPLES = QUESTIONS[:3]
SERVER_TIMEOUT = 180  # seconds for a server process to load the tiny system and answer its first request


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


@contextlib.contextmanager
def _launched(demo) -> Iterator[str]:
    """The page served in this process on a free 127.0.0.1 port; closed at the end."""
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@contextlib.contextmanager
def _server_process(command: list[str], env: dict[str, str], port: int, cwd: Path = REPO) -> Iterator[str]:
    """Run a server command until its page answers (bounded), then stop it; its output is the failure message."""
    url = f"http://127.0.0.1:{port}/"
    # Output to a file, not a pipe: a full pipe would stall the server.
    with (
        tempfile.TemporaryFile("w+") as output,
        subprocess.Popen(command, env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT) as process,
    ):
        try:
            deadline = time.time() + SERVER_TIMEOUT
            while True:
                if process.poll() is not None:
                    output.seek(0)
                    pytest.fail(f"the server exited with {process.returncode}:\n{output.read()[-3000:]}")
                if time.time() > deadline:
                    pytest.fail(f"the server did not answer on {url} within {SERVER_TIMEOUT} s")
                try:
                    if httpx.get(url, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def system_dir(tokenizer, tiny_bert_config, tmp_path_factory) -> Path:
    system = build_tiny_system(tokenizer, tiny_bert_config)
    system.examples = list(EXAMPLES)  # as from_components(examples=...) would set them
    path = tmp_path_factory.mktemp("demo") / "system"
    system.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def qa(system_dir):
    return load_qa(system_dir)


@pytest.fixture(scope="module")
def page(system_dir) -> Iterator[str]:
    """The demo page of the saved system, served once for the module (the system is loaded once, here)."""
    with _launched(build_demo(str(system_dir), title="tiny test system (random weights)")) as url:
        yield url


@pytest.fixture(scope="module")
def client(page):
    return gradio_client.Client(page, verbose=False)


def test_highlight_escapes_the_passage_and_marks_the_span():
    text = 'x < y & "quoted" answer > end'
    start = text.index('"quoted"')
    marked = highlight(text, start, start + len('"quoted" answer'))
    assert marked == "x &lt; y &amp; <mark>&quot;quoted&quot; answer</mark> &gt; end"
    assert highlight("abc", 0, 0) == "<mark></mark>abc"
    with pytest.raises(ValueError, match="outside the passage"):
        highlight("abc", 2, 4)


def test_saved_examples_round_trip_and_bad_ones_are_refused(system_dir, tmp_path):
    assert QASystem.from_pretrained(system_dir).examples == EXAMPLES
    assert json.loads((system_dir / "examples.json").read_text()) == EXAMPLES
    broken = tmp_path / "system"
    shutil.copytree(system_dir, broken)
    (broken / "examples.json").write_text(json.dumps(["Who wrote Hamlet?", ""]))
    with pytest.raises(ValueError, match=r"examples\.json: example 1"):
        QASystem.from_pretrained(broken)


@pytest.mark.parametrize("retriever", ["dense", "bm25", "hybrid"])
def test_answer_question_is_the_pipeline_call_with_its_spans_marked(qa, retriever):
    question = QUESTIONS[1]
    result = answer_question(qa, question, retriever, num_passages=4, top_k=3)
    expected = qa(question, retriever=retriever, num_passages=4, top_k=3, return_passages=True)
    assert result["error"] is None
    assert result["answers"] == expected["answers"] and len(result["answers"]) == 3
    assert result["passages"] == expected["passages"]
    marks = re.findall(r"<mark>(.*?)</mark>", result["answer_html"])
    assert marks == [html.escape(a["passage"]["text"][a["start"] : a["end"]]) for a in expected["answers"]]
    for answer in expected["answers"]:
        assert (
            f'<span class="dpr-answer-text">{html.escape(answer["answer"])}</span>' in result["answer_html"]
        )
    assert [row[1:] for row in result["passage_rows"]] == [
        [p["title"], round(p["score"], 4), retriever, p["id"]] for p in expected["passages"]
    ]
    assert [row[0] for row in result["passage_rows"]] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("question", "retriever", "message"),
    [
        ("", "dense", "Type a question first."),
        ("   ", "hybrid", "Type a question first."),
        ("zzzqx vvvkw", "bm25", "No answer: no passage was retrieved"),  # no term in the BM25 vocabulary
        (QUESTIONS[0], "sparse", "This system has no sparse retriever."),
    ],
)
def test_errors_are_messages_not_exceptions(qa, question, retriever, message):
    result = answer_question(qa, question, retriever, num_passages=4, top_k=1)
    assert message in result["answer_html"] and 'class="dpr-error"' in result["answer_html"]
    assert result["answers"] == [] and result["passage_rows"] == []


def test_a_system_without_bm25_offers_dense_only(tokenizer, tiny_bert_config):
    dense_only = load_qa(build_tiny_system(tokenizer, tiny_bert_config, with_bm25=False))
    result = answer_question(dense_only, QUESTIONS[0], "hybrid")
    assert result["error"] == "This system has no hybrid (BM25 + dense) retriever."
    assert answer_question(dense_only, QUESTIONS[0], "dense")["error"] is None


def test_page_answers_through_gradio_client(client, qa):
    for retriever in ("dense", "bm25", "hybrid"):
        answer_html, table, raw = client.predict(QUESTIONS[2], retriever, 4, 2, api_name="/answer")
        expected = qa(QUESTIONS[2], retriever=retriever, num_passages=4, top_k=2, return_passages=True)
        assert raw["error"] is None and raw["retriever"] == retriever
        assert _rounded(raw["answers"]) == _rounded(expected["answers"])
        best = expected["answers"][0]
        assert (
            f"<mark>{html.escape(best['passage']['text'][best['start'] : best['end']])}</mark>" in answer_html
        )
        assert table["headers"] == PASSAGE_HEADERS
        assert [row[4] for row in table["data"]] == [p["id"] for p in expected["passages"]]


def test_page_errors_show_as_messages_through_gradio_client(client):
    answer_html, table, raw = client.predict("  ", "dense", 4, 1, api_name="/answer")
    assert "Type a question first." in answer_html and raw["error"] == "Type a question first."
    assert table["data"] in ([], [["", "", "", "", ""]])  # an empty table (gradio may show one blank row)
    assert "Traceback" not in answer_html


def test_page_offers_the_systems_examples_and_retrievers(page):
    config = httpx.get(page + "config", timeout=30).json()
    text = json.dumps(config)
    for example in EXAMPLES:
        assert example in text
    [radio] = [c for c in config["components"] if c.get("props", {}).get("elem_id") == "retriever"]
    assert [value for _, value in radio["props"]["choices"]] == ["dense", "bm25", "hybrid"]


def test_the_page_loads_the_system_once(system_dir, qa, tmp_path):
    copy = tmp_path / "system"
    shutil.copytree(system_dir, copy)
    with _launched(build_demo(str(copy))) as url:
        shutil.rmtree(copy)  # questions are answered from the system loaded with the page, not from disk
        _, _, raw = gradio_client.Client(url, verbose=False).predict(
            QUESTIONS[4], "bm25", 4, 1, api_name="/answer"
        )
    assert raw["error"] is None
    assert _rounded(raw["answers"]) == _rounded(qa(QUESTIONS[4], retriever="bm25", num_passages=4, top_k=1))


def test_a_system_that_does_not_load_gives_a_page_saying_why(tmp_path):
    missing = tmp_path / "no-such-system"
    not_a_system = tmp_path / "not-a-system"
    not_a_system.mkdir()
    with _launched(build_demo(str(not_a_system))) as url:
        assert "is not a QA system folder: no config.json" in httpx.get(url + "config", timeout=30).text
    with _launched(build_demo(str(missing))) as url:
        page = httpx.get(url + "config", timeout=30).text
    assert (
        f"Could not load the QA system {missing}: {missing} is neither a local folder nor a Hub repo id"
        in page
    )
    assert "Traceback" not in page


def test_demo_command_serves_the_page(system_dir, qa):
    port = _free_port()
    command = cli_command("demo", str(system_dir), "--host", "127.0.0.1", "--port", str(port))
    with _server_process(command, subprocess_env(), port) as url:
        _, _, raw = gradio_client.Client(url, verbose=False).predict(
            QUESTIONS[0], "hybrid", 4, 1, api_name="/answer"
        )
    assert _rounded(raw["answers"]) == _rounded(qa(QUESTIONS[0], retriever="hybrid", num_passages=4, top_k=1))


# Run where gradio cannot be imported: a meta-path finder refuses it, as if the demo extra were not installed.
NO_GRADIO = """
import importlib.abc, sys

class NoGradio(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "gradio" or name.startswith("gradio."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoGradio())
import dpr_hf, dpr_hf.demo  # importing works without gradio
from dpr_hf.cli import main
sys.exit(main(["demo", sys.argv[1]]))
"""


def test_without_gradio_the_command_says_how_to_install_it(system_dir):
    result = subprocess.run(
        [sys.executable, "-c", NO_GRADIO, str(system_dir)],
        env=subprocess_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "dpr-hf demo: error: the demo page needs gradio: pip install 'dpr-hf[demo]'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def uploads(monkeypatch) -> list[dict]:
    """What each upload would send: the repo, its type and SDK, and every file's text (only the Hub calls are
    replaced; the Hub cannot be reached from the tests)."""
    calls: list[dict] = []
    created: dict[str, dict] = {}

    def create_repo(self, repo_id, *, private=None, exist_ok=False, repo_type=None, space_sdk=None, **kwargs):
        created[repo_id] = {"private": private, "repo_type": repo_type, "space_sdk": space_sdk}
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, commit_message=None, **kwargs):
        folder = Path(folder_path)
        files = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
        texts = {name: (folder / name).read_text() for name in files} if repo_type == "space" else {}
        calls.append(
            {"repo_id": repo_id, "repo_type": repo_type, **created[repo_id], "files": files, "texts": texts}
        )
        return f"commit for {repo_id}"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def test_push_space_uploads_an_app_that_serves_the_pushed_system(system_dir, qa, uploads, tmp_path, capsys):
    assert cli_main(["push", str(system_dir), "me/dpr-tiny", "--space", "--private"]) == 0
    assert (
        "pushed the demo Space to https://huggingface.co/spaces/me/dpr-tiny-demo" in capsys.readouterr().out
    )
    system_call, space_call = uploads
    assert system_call["repo_id"] == "me/dpr-tiny" and system_call["repo_type"] is None
    assert "examples.json" in system_call["files"]
    assert space_call["repo_id"] == "me/dpr-tiny-demo"
    assert (space_call["repo_type"], space_call["space_sdk"], space_call["private"]) == (
        "space",
        "gradio",
        True,
    )
    assert space_call["files"] == {"app.py", "requirements.txt", "README.md"}
    assert space_call["texts"]["requirements.txt"] == "dpr-hf[demo]\n"
    assert "build_demo('me/dpr-tiny')" in space_call["texts"]["app.py"]
    card = SpaceCard(space_call["texts"]["README.md"])
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py"
    assert card.data.sdk_version == gr.__version__ and card.data.models == ["me/dpr-tiny"]
    assert "dpr-hf demo me/dpr-tiny" in card.text

    # Run the uploaded app as a Space runs it (`python app.py`, port from the environment), the system repo
    # coming from the Hub cache as a download would leave it.
    space = tmp_path / "space"
    space.mkdir()
    for name, text in space_call["texts"].items():
        (space / name).write_text(text)
    cache = tmp_path / "hub"
    hub_cache_snapshot(cache, "me/dpr-tiny", system_dir)
    port = _free_port()
    env = subprocess_env(
        HF_HUB_CACHE=str(cache),
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    with _server_process([sys.executable, "app.py"], env, port, cwd=space) as url:
        _, _, raw = gradio_client.Client(url, verbose=False).predict(
            QUESTIONS[3], "dense", 4, 2, api_name="/answer"
        )
    assert _rounded(raw["answers"]) == _rounded(qa(QUESTIONS[3], retriever="dense", num_passages=4, top_k=2))


def test_push_space_requirements_can_be_set(system_dir, uploads):
    requirement = "dpr-hf[demo] @ git+https://github.com/example/dpr_hf"
    cli_main(
        [
            "push",
            str(system_dir),
            "me/sys",
            "--space",
            "--space-id",
            "me/other",
            "--space-requirement",
            requirement,
        ]
    )
    assert (
        uploads[-1]["repo_id"] == "me/other"
        and uploads[-1]["texts"]["requirements.txt"] == f"{requirement}\n"
    )


def _chromium_driver(tmp_path: Path):
    """Headless Debian Chromium through its chromedriver, kept off the network (none can be reached here)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip("needs Debian's chromium and chromium-driver: make test-browser installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1100",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=chromedriver))


@pytest.mark.browser
def test_in_chromium_a_typed_question_shows_its_answer_highlighted(page, qa, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    question = QUESTIONS[1]
    [best] = qa(question)  # the page's defaults are the system's: dense, 4 passages, one answer
    driver = _chromium_driver(tmp_path)
    try:
        driver.get(page)
        wait = WebDriverWait(driver, 60)
        box = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#question textarea, #question input")))
        box.send_keys(question)
        driver.find_element(By.CSS_SELECTOR, "#ask").click()
        mark = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#answers mark")))
        assert mark.text == best["passage"]["text"][best["start"] : best["end"]].strip()
        answer = driver.find_element(By.CSS_SELECTOR, "#answers .dpr-answer-text")
        assert answer.text == best["answer"].strip()
        passages = driver.find_element(By.CSS_SELECTOR, "#passages").text
        assert best["passage"]["id"] in passages
        shot = Path(os.environ.get("DPR_HF_DEMO_SCREENSHOT", tmp_path / "demo.png"))
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 0
    finally:
        driver.quit()
