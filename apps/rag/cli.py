"""`conductor rag ...`: ingest, search, ask, eval, collections, delete, faq-set.

The embedded store has one owner. While a Conductor server runs (it answers /healthz at `--url`, default
$CONDUCTOR_BASE_URL or the configured host/port), every command goes through its HTTP API — no second process opens
the store and no model is loaded here; without a server the command opens the store itself.
`--json` prints exactly one JSON document on stdout; progress and logs go to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from deployments.vectorstore import StoreError, StoreLockedError


def _service() -> Any:
    from apps.client import ConductorClient, cli_api_key, cli_base_url
    from apps.rag.library import RagService
    from cluster.config import load_config

    try:
        # Answers come from the chat API the command line points at ($CONDUCTOR_BASE_URL or the configured one).
        return RagService(load_config(), client=ConductorClient(cli_base_url(), cli_api_key()))
    except ValueError as e:  # config errors
        raise click.ClickException(str(e)) from None


def _emit(obj: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(obj, indent=1) if as_json else text)


def _params(k: int | None, mode: str, rerank: bool) -> Any:
    from apps.rag.retrieval import SearchParams

    return SearchParams(k=k or 5, mode=mode, rerank=rerank)


def _server(url: str | None) -> Any:
    """The running server's client, or None. An explicit --url that does not answer is an error."""
    from apps.client import running_server

    client = running_server(url)
    if client is None and url:
        raise click.ClickException(f"no Conductor server answers at {url}")
    return client


def _call(client: Any, method: str, path: str, **kw: Any) -> Any:
    from apps.client import cli_request

    try:
        return cli_request(client, method, path, **kw)
    finally:
        client.close()


def _local(local: Any) -> Any:
    from apps.rag.library import RagError
    from deployments.rerankers import RerankerUnavailable

    try:
        svc = _service()
    except StoreLockedError as e:  # a server we could not reach holds the store
        raise click.ClickException(f"{e} (is a Conductor server starting? pass --url)") from None
    except StoreError as e:
        raise click.ClickException(str(e)) from None
    try:
        return local(svc)
    except (RagError, StoreError, RerankerUnavailable) as e:
        raise click.ClickException(str(e)) from None
    finally:
        svc.close()


def _local_or_remote(url: str | None, local: Any, path: str, body: dict[str, Any] | None = None,
                     method: str = "POST") -> Any:
    """Through the running server's API when there is one, else locally."""
    client = _server(url)
    if client is not None:
        return _call(client, method, path, **({"json": body} if body is not None else {}))
    return _local(local)


@click.group()
def rag() -> None:
    """Ask questions about your own documents, with citations and evaluation."""


@rag.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--collection", "-c", required=True, help="Collection to ingest into (created if missing).")
@click.option("--chunking", type=click.Choice(["fixed", "recursive", "structure"]), default=None,
              help="Chunking strategy for a new collection (default from config).")
@click.option("--chunk-size", type=click.IntRange(100, 20000), default=None, help="Characters per chunk.")
@click.option("--chunk-overlap", type=click.IntRange(0, 5000), default=None, help="Overlap for fixed chunks.")
@click.option("--engine", type=click.Choice(["auto", "local", "ray"]), default="auto",
              help="ray: Ray Data pipeline; local: one process; auto: ray when a cluster address is set.")
@click.option("--questions", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Attach a question set: the evaluation re-runs after every ingestion.")
@click.option("--url", default=None, help="A running Conductor server (default: found automatically).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def ingest(paths: tuple[str, ...], collection: str, chunking: str | None, chunk_size: int | None,
           chunk_overlap: int | None, engine: str, questions: str | None, url: str | None, as_json: bool) -> None:
    """Ingest files or folders (Markdown, text, reST, HTML, PDF); only new or changed documents are embedded."""
    if engine == "auto":
        engine = "ray" if os.environ.get("RAY_ADDRESS") else "local"

    from cluster.progress import ConsoleProgress

    client = _server(url)
    if client is not None and (questions or chunk_size or chunk_overlap):
        client.close()
        raise click.ClickException("--questions, --chunk-size and --chunk-overlap need the store itself: stop the "
                                   "server, or ingest without them through it")
    with ConsoleProgress("ingest", unit="doc") as bar:
        if client is not None:
            d = _upload_all(client, list(paths), collection, chunking, bar.count)
        else:
            d = _local(lambda s: s.ingest(list(paths), collection, chunking, chunk_size, chunk_overlap, engine,
                                          bar.count, os.path.abspath(questions) if questions else None).as_dict())
    text = (f"{collection}: {len(d['added'])} added, {len(d['updated'])} updated, {len(d['unchanged'])} unchanged, "
            f"{len(d['deleted'])} deleted, {len(d['skipped'])} skipped; {d['chunks']} chunks in {d['seconds']} s")
    text += "".join(f"\n  skipped {p}: {r}" for p, r in d["skipped"].items())
    _emit(d, as_json, text)


def _upload_all(client: Any, paths: list[str], collection: str, chunking: str | None, progress: Any) -> dict:
    """Ingest local files through the server: each supported file is uploaded (the server ingests it)."""
    from apps.rag.parsers import kind_of
    from deployments.openai_http import APIStatusError

    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(os.path.join(d, n) for d, _, names in os.walk(p) for n in names if kind_of(n))
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise click.ClickException(f"no such file or folder: {p}")
    total: dict[str, Any] = {"collection": collection, "added": [], "updated": [], "unchanged": [], "deleted": [],
                             "skipped": {}, "chunks": 0, "seconds": 0.0}
    try:
        for i, f in enumerate(files, 1):
            params = {"filename": os.path.basename(f)} | ({"chunking": chunking} if chunking else {})
            with open(f, "rb") as fh:
                try:
                    rep = client.upload(f"/v1/rag/{collection}/upload", fh.read(), params)
                except APIStatusError as e:
                    if e.status not in (413, 415, 422):  # not this file's fault: stop
                        raise
                    rep = {"skipped": {os.path.abspath(f): e.message}}  # this file is unusable; the rest go on
            progress(i, len(files), os.path.basename(f))
            for key in ("added", "updated", "unchanged", "deleted"):
                total[key] += rep.get(key, [])
            total["skipped"].update(rep.get("skipped", {}))
            total["chunks"] += rep.get("chunks", 0)
            total["seconds"] = round(total["seconds"] + rep.get("seconds", 0.0), 2)
    except Exception as e:
        raise click.ClickException(getattr(e, "message", None) or f"upload failed: {type(e).__name__}") from None
    finally:
        client.close()
    return total


def _query_opts(f: Any) -> Any:
    f = click.option("--collection", "-c", required=True, help="Collection to search.")(f)
    f = click.option("--k", type=click.IntRange(1, 100), default=5, help="Passages to retrieve.")(f)
    f = click.option("--mode", type=click.Choice(["dense", "sparse", "hybrid"]), default="hybrid")(f)
    f = click.option("--rerank", is_flag=True, help="Rescore fused candidates (with rag.reranker when one is set).")(f)
    f = click.option("--url", default=None, help="Use a running Conductor server's HTTP API.")(f)
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(f)


@rag.command()
@click.argument("question")
@_query_opts
def search(question: str, collection: str, k: int, mode: str, rerank: bool, url: str | None, as_json: bool) -> None:
    """Retrieval only: the best documents for QUESTION, each with its best passage.

    --json prints [{source, title, score, best: {text, section, start, end, page, ...}, ranks}], one per document,
    best first, so a caller can score documents without re-aggregating passages."""
    body = {"question": question, "k": k, "mode": mode, "rerank": rerank}
    docs = _local_or_remote(url, lambda s: [d.model_dump() for d in s.search_documents(collection, question,
                                                                                        _params(k, mode, rerank))],
                            f"/v1/rag/{collection}/search", body)
    docs = docs["documents"] if isinstance(docs, dict) else docs
    lines = []
    for i, d in enumerate(docs, 1):
        h = d["best"]
        ref = h["source"] + (f"#page={h['page']}" if h.get("page") else "")
        lines.append(f"{i}. [{d['score']:.3f}] {ref}" + (f" § {h['section']}" if h["section"] else "")
                     + f" ({h['start']}-{h['end']})\n   {h['text'][:200].replace(chr(10), ' ')}")
    _emit(docs, as_json, "\n".join(lines) or "no results")


@rag.command()
@click.argument("question")
@_query_opts
@click.option("--model", default=None, help="Chat model id (default: rag.chat_model).")
def ask(question: str, collection: str, k: int, mode: str, rerank: bool, url: str | None, as_json: bool,
        model: str | None) -> None:
    """Answer QUESTION from the collection, citing passages."""
    body = {"question": question, "k": k, "mode": mode, "rerank": rerank, "model": model}
    ans = _local_or_remote(url, lambda s: s.ask(collection, question, _params(k, mode, rerank), model).model_dump(),
                           f"/v1/rag/{collection}/query", body)
    lines = [ans["answer"], ""]
    if ans.get("warning"):
        lines.insert(0, f"warning: {ans['warning']}")
    for s in ans["sources"]:
        mark = "*" if s.get("cited") else " "
        ref = s["source"] + (f"#page={s['page']}" if s.get("page") else "")
        lines.append(f"{mark}[{s['n']}] {ref}" + (f" § {s['section']}" if s["section"] else "")
                     + f" ({s['start']}-{s['end']})")
    _emit(ans, as_json, "\n".join(lines))


@rag.command("eval")
@click.option("--collection", "-c", required=True)
@click.option("--questions", type=click.Path(exists=True, dir_okay=False), required=True,
              help="JSON / JSON lines of {question, gold: [paths]}.")
@click.option("--k", type=click.IntRange(1, 100), default=5)
@click.option("--modes", default="dense,sparse,hybrid,hybrid+rerank", help="Comma-separated retrieval modes.")
@click.option("--answers", "--faithfulness", "faith", type=click.IntRange(0, 1000), default=0,
              help="Also answer the first N questions and score the answers: faithfulness, answer relevance, "
                   "context precision and recall, grounded rate (needs the chat API).")
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(collection: str, questions: str, k: int, modes: str, faith: int, as_json: bool) -> None:
    """Retrieval metrics (hit rate, recall@k, MRR, nDCG) per mode; appended to the collection's history."""
    from apps.rag.eval import format_table, load_questions, run_and_record
    from apps.rag.library import RagError

    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    client = _server(None)
    if client is not None:  # the server evaluates; the set travels with the request, gold files by name
        if faith:
            client.close()
            raise click.ClickException("--answers needs the store itself: stop the server first")
        try:
            qs = load_questions(questions)
        except ValueError as e:
            client.close()
            raise click.ClickException(str(e)) from None
        entry = _call(client, "POST", f"/v1/rag/{collection}/eval", json={"k": k, "modes": mode_list, "questions": [
            {"question": q["question"], "gold": q["gold"], "answer": q.get("answer")} for q in qs]})
    else:
        try:
            svc = _service()
            try:
                entry = run_and_record(svc, collection, os.path.abspath(questions), k, mode_list, answers=faith)
            finally:
                svc.close()
        except (RagError, StoreError, ValueError) as e:
            raise click.ClickException(str(e)) from None
    text = f"{collection} ({entry['chunking']}, {entry['chunks']} chunks)\n" + format_table(entry["rows"])
    if "answers" in entry:
        a = entry["answers"]
        text += (f"\nanswers ({a['method']}, n={a['n']}): " + ", ".join(
            f"{key} {a[key]:.3f}" for key in ("faithfulness", "answer_relevance", "context_precision", "context_recall",
                                              "grounded")))
    _emit(entry, as_json, text)


@rag.command()
@click.option("--json", "as_json", is_flag=True)
def collections(as_json: bool) -> None:
    """List collections with their embedding model and chunking."""
    cols = _local_or_remote(None, lambda s: s.collections(), "/v1/rag/collections", method="GET")
    cols = cols["collections"] if isinstance(cols, dict) else cols
    _emit(cols, as_json, "\n".join(f"{c['name']}: {c.get('chunks', 0)} chunks, {c['chunking']}, "
                                   f"{c['embedding_model']}" for c in cols) or "no collections")


@rag.command()
@click.argument("collection")
@click.confirmation_option(prompt="Delete this collection and all its chunks?")
def delete(collection: str) -> None:
    """Delete a collection."""
    _local_or_remote(None, lambda s: s.delete(collection), f"/v1/rag/{collection}", method="DELETE")
    click.echo(f"deleted {collection}")


@rag.command("faq-set")
@click.argument("out_dir", type=click.Path(file_okay=False))
def faq_set(out_dir: str) -> None:
    """Write the Python-docs FAQ evaluation set (python3-doc) to OUT_DIR: docs/ and questions.jsonl."""
    from apps.rag.faq import build_faq_set

    try:
        q = build_faq_set(out_dir)
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from None
    n = sum(1 for _ in open(q))
    click.echo(f"{n} questions: {q}\ningest with: conductor rag ingest {os.path.join(out_dir, 'docs')} "
               f"--collection faq --questions {q}", err=False)


if __name__ == "__main__":
    rag(sys.argv[1:])
