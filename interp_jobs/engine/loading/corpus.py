"""Local text corpora for training and evaluating lenses, and their packing into token batches.

A lens is only as trustworthy as the text it was trained and measured on, so the corpus is a
file in this repository (it exists offline on a fresh machine), identified by the sha256 of
its exact bytes, and every packed token batch has its own digest as well.

The shipped corpus ``stdlib-docs-v1`` is English prose from the Python 3.11 standard library:
the documentation topics in ``pydoc_data.topics`` (the language reference text that ``help()``
shows) and the docstrings of public stdlib modules, classes and functions. Both are part of
CPython and licensed under the PSF License Agreement v2 (see ``corpora/stdlib-docs-v1/``).
Docstrings of classes and functions are stored as one-turn chat conversations ("What does
``json.dumps`` do?" answered by its docstring) so a lens also sees chat-template tokens, which
is how the probe prompts reach the model; the rest is plain text.

The held-out split is fixed by a salted hash of each document's id, not by the seed: any seed
then samples training and evaluation text from disjoint documents, so a fidelity check can
never be run on text the lens was trained on. The seed only orders documents within a split.

    python -m interp_jobs.engine.loading.corpus build  # re-extract it from this interpreter
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp_jobs.engine.errors import PermanentEngineError

CORPORA_DIR = Path(__file__).with_name("corpora")
DEFAULT_CORPUS = "stdlib-docs-v1"
DOCUMENTS_FILE = "documents.jsonl.gz"
MANIFEST_FILE = "MANIFEST.json"
LICENCE_FILE = "LICENSE.txt"  # CPython's own licence text, which the PSF licence asks to keep
SPLITS = ("train", "heldout")
HELDOUT_PERCENT = 10
SPLIT_SALT = "assay-corpus-split-v1"  # changing it would mix training text into held-out text
DOC_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Document:
    id: str
    text: str = ""  # plain text documents
    messages: tuple[tuple[str, str], ...] = ()  # chat documents: (role, content) turns

    @property
    def split(self) -> str:
        bucket = int(hashlib.sha256(f"{SPLIT_SALT}:{self.id}".encode()).hexdigest(), 16) % 100
        return "heldout" if bucket < HELDOUT_PERCENT else "train"

    def to_json(self) -> dict[str, Any]:
        if self.messages:
            return {"id": self.id, "messages": [list(turn) for turn in self.messages]}
        return {"id": self.id, "text": self.text}


@dataclass(frozen=True)
class Corpus:
    name: str
    documents: tuple[Document, ...]
    digest: str  # sha256 of the uncompressed JSONL, one document per line
    licence: str
    source: str

    def split(self, which: str) -> list[Document]:
        if which not in SPLITS:
            raise PermanentEngineError(f"Unknown corpus split {which!r}; use one of {SPLITS}.")
        return [doc for doc in self.documents if doc.split == which]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.digest,
            "documents": len(self.documents),
            "licence": self.licence,
            "source": self.source,
            "heldout_rule": f"sha256('{SPLIT_SALT}:' + id) % 100 < {HELDOUT_PERCENT}",
        }


def documents_jsonl(documents: Iterable[Document]) -> bytes:
    lines = (json.dumps(doc.to_json(), ensure_ascii=False, sort_keys=True) for doc in documents)
    return "".join(line + "\n" for line in lines).encode("utf-8")


def corpus_from_documents(
    name: str, documents: Sequence[Document], *, licence: str = "", source: str = ""
) -> Corpus:
    """An in-memory corpus (tests and ad-hoc training); its digest is computed the same way."""
    digest = hashlib.sha256(documents_jsonl(documents)).hexdigest()
    return Corpus(name, tuple(documents), digest, licence, source)


def load_corpus(name: str = DEFAULT_CORPUS) -> Corpus:
    """Load a shipped corpus and check its bytes against the digest in its manifest."""
    directory = CORPORA_DIR / name
    if not name or "/" in name or not (directory / MANIFEST_FILE).is_file():
        known = sorted(p.name for p in CORPORA_DIR.iterdir() if (p / MANIFEST_FILE).is_file())
        raise PermanentEngineError(f"Unknown corpus {name!r}; shipped corpora: {known}.")
    manifest = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
    raw = gzip.decompress((directory / DOCUMENTS_FILE).read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if digest != manifest["sha256"]:
        raise PermanentEngineError(
            f"Corpus {name} is corrupt: its documents hash to {digest}, but the manifest "
            f"records {manifest['sha256']}. Restore {directory} from the repository."
        )
    documents = tuple(_document(json.loads(line)) for line in raw.decode("utf-8").splitlines())
    return Corpus(name, documents, digest, manifest["licence"], manifest["source"])


def _document(row: dict[str, Any]) -> Document:
    messages = tuple((role, content) for role, content in row.get("messages", ()))
    return Document(id=row["id"], text=row.get("text", ""), messages=messages)


# --- packing documents into fixed-length token sequences ---------------------------------


@dataclass(frozen=True)
class TokenBatch:
    tokens: Any  # torch.LongTensor (n_sequences, seq_len)
    digest: str  # sha256 of the tokens as little-endian int32, shape included
    documents: int  # how many documents were (at least partly) used

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.numel())


def token_digest(tokens) -> str:
    import numpy as np

    array = np.ascontiguousarray(tokens.detach().cpu().numpy().astype("<i4"))
    header = json.dumps(list(array.shape)).encode()
    return hashlib.sha256(header + b"\n" + array.tobytes()).hexdigest()


def render_document(tokenizer, doc: Document) -> list[int]:
    """Token ids of one document as the model would see it (chat documents via its template)."""
    if doc.messages and getattr(tokenizer, "chat_template", None):
        messages = [{"role": role, "content": content} for role, content in doc.messages]
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    else:  # models without a chat template read the turns as plain paragraphs
        text = doc.text or DOC_SEPARATOR.join(content for _, content in doc.messages)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def pack_documents(
    tokenizer,
    documents: Sequence[Document],
    *,
    seq_len: int,
    seed: int,
    n_sequences: int | None = None,
) -> TokenBatch:
    """Shuffle documents by ``seed``, join them, and cut the stream into ``seq_len`` rows.

    Every row starts with the tokenizer's BOS token (SAELens's ``prepend_bos`` convention;
    for SmolLM2 that is ``<|im_start|>``, the first token of every chat prompt), never twice.
    The model parks its attention sink, a residual vector ~140 times the usual norm, on the
    first position; without a fixed first token a row that happens to begin with "\n\n"
    gets a second sink at position 1, and one such vector dominates a lens's variance.
    Every row is full (no padding); with ``n_sequences`` only the documents needed are
    tokenized.
    """
    import torch

    if seq_len < 3:
        raise PermanentEngineError(f"seq_len {seq_len} is too short; use at least 3.")
    order = list(documents)
    random.Random(seed).shuffle(order)  # noqa: S311 - seeded sampling, not cryptography
    stream = _token_stream(tokenizer, order)
    rows, used = _cut_rows(stream, seq_len, tokenizer.bos_token_id, n_sequences)
    if not rows or (n_sequences is not None and len(rows) < n_sequences):
        raise PermanentEngineError(
            f"The corpus split has too little text for {n_sequences or 1} sequence(s) of "
            f"{seq_len} tokens; ask for fewer or shorter sequences."
        )
    tokens = torch.tensor(rows, dtype=torch.long)
    return TokenBatch(tokens=tokens, digest=token_digest(tokens), documents=used)


def _token_stream(tokenizer, documents: Sequence[Document]) -> Iterator[list[int]]:
    separator = list(tokenizer(DOC_SEPARATOR, add_special_tokens=False)["input_ids"])
    for doc in documents:
        yield render_document(tokenizer, doc) + separator


def _cut_rows(
    stream: Iterator[list[int]], seq_len: int, bos: int | None, limit: int | None
) -> tuple[list[list[int]], int]:
    rows: list[list[int]] = []
    buffer: list[int] = []
    used = 0
    for tokens in stream:
        used += 1
        buffer.extend(tokens)
        while len(buffer) >= seq_len and (limit is None or len(rows) < limit):
            prefix = [] if bos is None or buffer[0] == bos else [bos]
            take = seq_len - len(prefix)
            rows.append(prefix + buffer[:take])
            buffer = buffer[take:]
        if limit is not None and len(rows) >= limit:
            break
    return rows, used


# --- building the stdlib corpus ------------------------------------------------------------

SKIP_PARTS = {
    "test",
    "tests",
    "idlelib",
    "lib2to3",
    "site-packages",
    "dist-packages",
    "ensurepip",
    "turtledemo",
    "encodings",
    "pydoc_data",
    "__pycache__",
}
MIN_DOC_CHARS = 120
STDLIB_SOURCE = (
    "CPython {version} standard library: pydoc_data.topics (documentation topics) "
    "and docstrings of public modules, classes and functions"
)
LICENCE = "PSF-2.0 (Python Software Foundation License Agreement, version 2)"


def stdlib_documents() -> list[Document]:
    """Every document of the stdlib corpus, in a fixed order, duplicates removed."""
    from pydoc_data.topics import topics

    docs = [Document(id=f"topic:{key}", text=topics[key].strip()) for key in sorted(topics)]
    docs.extend(_docstring_documents())
    seen: set[str] = set()
    unique = []
    for doc in docs:
        key = doc.text or doc.messages[-1][1]
        if key not in seen:
            seen.add(key)
            unique.append(doc)
    return unique


def _stdlib_files() -> Iterator[tuple[str, Path]]:
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if any(p in SKIP_PARTS or (p.startswith("_") and p != "__init__") for p in parts):
            continue
        module = ".".join(p for p in parts if p != "__init__")
        yield module, path


def _docstring_documents() -> Iterator[Document]:
    import ast

    for module, path in _stdlib_files():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        module_doc = ast.get_docstring(tree)
        if module_doc and len(module_doc) >= MIN_DOC_CHARS:
            yield Document(id=f"module:{module}", text=f"{module}\n\n{module_doc}")
        yield from _definition_documents(module, tree)


def _definition_documents(module: str, tree) -> Iterator[Document]:
    """Public classes, their public methods, and public functions, as chat turns."""
    import ast

    kinds = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    for node in tree.body:
        if not isinstance(node, kinds) or node.name.startswith("_"):
            continue
        yield from _chat_document(module, node.name, node)
        if isinstance(node, ast.ClassDef):
            for child in node.body:
                if isinstance(child, kinds[1:]) and not child.name.startswith("_"):
                    yield from _chat_document(module, f"{node.name}.{child.name}", child)


def _chat_document(module: str, name: str, node) -> Iterator[Document]:
    import ast

    doc = ast.get_docstring(node)
    if not doc or len(doc) < MIN_DOC_CHARS:
        return
    noun = "class" if isinstance(node, ast.ClassDef) else "function"
    question = f"What does the {noun} `{module}.{name}` in Python's standard library do?"
    yield Document(id=f"doc:{module}.{name}", messages=(("user", question), ("assistant", doc)))


def build_stdlib_corpus(name: str = DEFAULT_CORPUS) -> Path:
    """Write the corpus file and its manifest (deterministic bytes: gzip without timestamps)."""
    import platform
    import shutil
    import sysconfig

    documents = stdlib_documents()
    raw = documents_jsonl(documents)
    directory = CORPORA_DIR / name
    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz:
        gz.write(raw)
    (directory / DOCUMENTS_FILE).write_bytes(buffer.getvalue())
    shutil.copyfile(Path(sysconfig.get_paths()["stdlib"]) / LICENCE_FILE, directory / LICENCE_FILE)
    version = platform.python_version()
    corpus = corpus_from_documents(
        name, documents, licence=LICENCE, source=STDLIB_SOURCE.format(version=version)
    )
    manifest = {
        **corpus.describe(),
        "python_version": version,
        "file": DOCUMENTS_FILE,
        "licence_file": LICENCE_FILE,
        "chat_documents": sum(1 for d in documents if d.messages),
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (directory / MANIFEST_FILE).write_text(text, encoding="utf-8")
    return directory


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["build"]:
        sys.exit("usage: python -m interp_jobs.engine.loading.corpus build")
    print(build_stdlib_corpus())
