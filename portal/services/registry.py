"""The model registry: import Hugging Face model directories as immutable versions.

A model directory is accepted when it has a parseable ``config.json`` naming a
``model_type``, weights in safetensors (which the ``safetensors`` library opens) or PyTorch
``.bin``, and a tokenizer. Files are uploaded content-addressed; the version's ``revision``
hashes the manifest (path, size, sha256 of every file), so equal directories give equal ids.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from django.db import IntegrityError, transaction
from django.db.models import Max
from safetensors import SafetensorError, safe_open

from portal.errors import NotFound, PermissionDenied, PlatformError
from portal.models import (
    ModelFile,
    ModelRepo,
    ModelVersion,
    Organization,
    Role,
    Visibility,
)
from portal.models.accounts import namespace_validator
from portal.storage import model_blob_key, sha256_file, store

MAX_FILES = 2000
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")
SKIP_NAMES = {".git", ".gitattributes", ".DS_Store", "__pycache__"}


class ModelImportError(PlatformError):
    code = "invalid_model_directory"


@dataclass
class Manifest:
    """What a valid model directory holds."""

    root: Path
    config: dict[str, Any]
    files: list[tuple[str, Path, int, str]] = field(default_factory=list)  # path, abs, size, sha
    chat_template: bool = False
    card_text: str = ""
    card_data: dict[str, Any] = field(default_factory=dict)

    @property
    def revision(self) -> str:
        lines = "\n".join(f"{p}\t{s}\t{h}" for p, _, s, h in sorted(self.files))
        return hashlib.sha256(lines.encode()).hexdigest()


def split_card(text: str) -> tuple[dict[str, Any], str]:
    """Split a README into its YAML front matter (a dict) and body."""
    if not text.startswith("---"):
        return {}, text
    parts = text.split("\n---", 1)
    if len(parts) != 2:
        return {}, text
    try:
        data = yaml.safe_load(parts[0][3:]) or {}
    except yaml.YAMLError as exc:
        raise ModelImportError(f"README.md front matter is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelImportError("README.md front matter must be a YAML mapping.")
    return data, parts[1].lstrip("-").lstrip("\n")


def validate_model_dir(root: Path) -> Manifest:
    """Check ``root`` is a Hugging Face causal-LM directory; raise ModelImportError if not."""
    if not root.is_dir():
        raise ModelImportError(f"{root} is not a directory.")
    config = _read_json(root / "config.json", required=True)
    if not isinstance(config.get("model_type"), str):
        raise ModelImportError("config.json has no 'model_type'.")
    manifest = Manifest(root=root, config=config)
    _collect_files(manifest)
    _check_weights(manifest)
    if not any((root / name).is_file() for name in TOKENIZER_FILES):
        raise ModelImportError(
            f"No tokenizer: expected one of {', '.join(TOKENIZER_FILES)} in {root}."
        )
    tok_config = _read_json(root / "tokenizer_config.json", required=False)
    manifest.chat_template = bool(tok_config.get("chat_template")) or any(
        (root / n).is_file() for n in ("chat_template.jinja", "chat_template.json")
    )
    readme = root / "README.md"
    if readme.is_file():
        manifest.card_data, manifest.card_text = split_card(readme.read_text(errors="replace"))
    return manifest


def _read_json(path: Path, *, required: bool) -> dict[str, Any]:
    if not path.is_file():
        if required:
            raise ModelImportError(f"Missing {path.name} in {path.parent}.")
        return {}
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelImportError(f"{path.name} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelImportError(f"{path.name} must hold a JSON object.")
    return data


def _collect_files(manifest: Manifest) -> None:
    root = manifest.root.resolve()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in SKIP_NAMES or part.startswith(".") for part in rel.parts):
            continue
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            raise ModelImportError(f"{rel} links outside the model directory.")
        if path.is_file():
            manifest.files.append((rel.as_posix(), path, path.stat().st_size, sha256_file(path)))
        if len(manifest.files) > MAX_FILES:
            raise ModelImportError(f"More than {MAX_FILES} files in the model directory.")


def _check_weights(manifest: Manifest) -> None:
    names = [p for p, *_ in manifest.files]
    safetensors = [p for p in names if p.endswith(".safetensors")]
    if not safetensors and not any(p.endswith(".bin") for p in names):
        raise ModelImportError("No weights: expected *.safetensors (or pytorch_model*.bin).")
    for rel in safetensors:
        _check_safetensors_header(manifest.root / rel)


def _check_safetensors_header(path: Path) -> None:
    """Open ``path`` with ``safetensors``, which checks the header and that the tensors' byte
    ranges cover the file exactly; its errors become a clear ModelImportError."""
    try:
        with safe_open(path, framework="numpy"):
            pass
    except SafetensorError as exc:
        raise ModelImportError(_safetensors_problem(path.name, str(exc))) from exc


def _safetensors_problem(name: str, detail: str) -> str:
    if "header too small" in detail:
        return f"{name} is truncated (no safetensors header)."
    if "not fully covered" in detail:
        return f"{name} is truncated: its tensors and the file's length disagree."
    return f"{name} is not a valid safetensors file ({detail})."


def _owner_for_import(namespace: str, actor: Any) -> Any:
    """The owner of ``namespace``; an unknown namespace becomes an organisation."""
    from portal.services.accounts import may_write_owner, resolve_owner

    try:
        owner = resolve_owner(namespace)
    except NotFound:
        if actor is not None and not actor.is_superuser:
            raise
        org = Organization.objects.create(name=namespace, display_name=namespace)
        if actor is not None:
            org.memberships.create(user=actor, role=Role.OWNER)
        return org
    if actor is not None and not may_write_owner(actor, owner):
        raise PermissionDenied(f"You may not publish models under '{namespace}'.")
    return owner


def parse_full_name(full_name: str) -> tuple[str, str]:
    namespace, _, name = full_name.partition("/")
    try:
        namespace_validator(namespace)
        namespace_validator(name)
    except Exception as exc:
        raise PlatformError(
            f"'{full_name}' is not a valid model name 'owner/name'.",
            code="invalid_name",
            param="name",
        ) from exc
    return namespace, name


def import_model_dir(
    path: Path,
    full_name: str,
    *,
    actor: Any | None,
    visibility: str = Visibility.PUBLIC,
    message: str = "",
) -> ModelVersion:
    """Validate, upload and register ``path`` as the next version of ``full_name``.

    Returns the existing version when the newest one already has the same revision.
    Raises ModelImportError for a malformed directory, PermissionDenied when ``actor``
    may not write the namespace.
    """
    namespace, name = parse_full_name(full_name)
    manifest = validate_model_dir(Path(path))
    with transaction.atomic():
        owner = _owner_for_import(namespace, actor)
        repo = _get_or_create_repo(owner, name, visibility, actor)
        latest = repo.latest_version()
    if latest is not None and latest.revision == manifest.revision:
        return latest
    _upload(repo, manifest)
    return _register_version(repo, manifest, actor, message)


def _get_or_create_repo(owner: Any, name: str, visibility: str, actor: Any) -> ModelRepo:
    repo = ModelRepo.objects.filter(namespace=ModelRepo.namespace_of(owner), name=name).first()
    if repo is not None:
        return repo
    if visibility not in Visibility.values:
        raise PlatformError(f"Unknown visibility '{visibility}'.", param="visibility")
    repo = ModelRepo(name=name, visibility=visibility, created_by=actor)
    repo.set_owner(owner)
    repo.full_clean(exclude=["created_by"])
    repo.save()
    return repo


def _upload(repo: ModelRepo, manifest: Manifest) -> None:
    objects = store()
    for _rel, abs_path, _size, sha in manifest.files:
        key = model_blob_key(repo.pk, sha)
        if not objects.exists("models", key):
            objects.put_file("models", key, abs_path)


def _register_version(
    repo: ModelRepo,
    manifest: Manifest,
    actor: Any,
    message: str,
    *,
    base_version: ModelVersion | None = None,
    object_keys: dict[str, str] | None = None,
) -> ModelVersion:
    """Record the next version of ``repo`` for ``manifest`` (files already stored under
    ``object_keys`` by path, else content-addressed) and apply its card. An adapter names
    its ``base_version``, whose architecture it shares."""
    config = manifest.config
    card = manifest.card_data
    keys = object_keys or {rel: model_blob_key(repo.pk, sha) for rel, _, _, sha in manifest.files}
    base_arch = base_version.architecture if base_version else ""
    base_type = base_version.model_type if base_version else ""
    for _attempt in range(3):
        try:
            with transaction.atomic():
                number = (repo.versions.aggregate(n=Max("number"))["n"] or 0) + 1
                version = ModelVersion.objects.create(
                    repo=repo,
                    number=number,
                    revision=manifest.revision,
                    architecture=(config.get("architectures") or [""])[0] or base_arch,
                    model_type=str(config.get("model_type") or base_type),
                    config=config,
                    base_model=str(card.get("base_model") or ""),
                    base_version=base_version,
                    has_chat_template=manifest.chat_template,
                    total_bytes=sum(s for _, _, s, _ in manifest.files),
                    message=message[:200],
                    created_by=actor,
                )
                ModelFile.objects.bulk_create(
                    ModelFile(
                        version=version, path=rel, size=size, sha256=sha, object_key=keys[rel]
                    )
                    for rel, _, size, sha in manifest.files
                )
                _apply_card(repo, manifest)
                return version
        except IntegrityError:
            continue  # a concurrent import took the number; take the next one
    raise PlatformError(
        "Could not allocate a version number; try again.", code="conflict", status=409
    )


def _apply_card(repo: ModelRepo, manifest: Manifest) -> None:
    data = manifest.card_data
    tags = data.get("tags") or []
    repo.card = manifest.card_text
    repo.card_data = json.loads(json.dumps(data, default=str))
    repo.pipeline_tag = str(data.get("pipeline_tag") or "text-generation")[:64]
    repo.license = str(data.get("license") or "")[:64]
    repo.tags = [str(t) for t in tags] if isinstance(tags, list) else [str(tags)]
    repo.save(update_fields=["card", "card_data", "pipeline_tag", "license", "tags", "updated_at"])


@dataclass(frozen=True)
class StoredFile:
    """A file already in the ``models`` bucket at ``object_key`` (a content-addressed key
    of the repo it is registered in)."""

    path: str
    size: int
    sha256: str
    object_key: str


def create_private_repo(owner: Any, name: str, actor: Any, description: str = "") -> ModelRepo:
    """A new private repo ``owner/name``, or ``name-2``, ``name-3``… when taken."""
    base = name[:90]
    for index in range(1, 100):
        candidate = base if index == 1 else f"{base}-{index}"
        namespace = ModelRepo.namespace_of(owner)
        if ModelRepo.objects.filter(namespace=namespace, name=candidate).exists():
            continue
        repo = ModelRepo(name=candidate, visibility=Visibility.PRIVATE, created_by=actor)
        repo.description = description[:2000]
        repo.set_owner(owner)
        try:
            with transaction.atomic():
                repo.full_clean(exclude=["created_by"], validate_constraints=False)
                repo.save()
        except IntegrityError:
            continue
        return repo
    raise PlatformError(f"No free repo name like {base}.", code="conflict", status=409)


def register_stored_version(
    repo: ModelRepo,
    files: list[StoredFile],
    *,
    config: dict[str, Any],
    card_text: str,
    base_version: ModelVersion | None,
    actor: Any,
    message: str = "",
    chat_template: bool = False,
) -> ModelVersion:
    """Register the next version of ``repo`` from files already stored (a fine-tune's
    result): an adapter of ``base_version``, or full weights when it is None. The card
    (README.md text with YAML front matter) sets the repo's card fields."""
    card_data, card_body = split_card(card_text)
    manifest = Manifest(root=Path("."), config=config, card_text=card_body, card_data=card_data)
    manifest.files = [(f.path, Path(f.path), f.size, f.sha256) for f in files]
    manifest.chat_template = chat_template
    return _register_version(
        repo,
        manifest,
        actor,
        message,
        base_version=base_version,
        object_keys={f.path: f.object_key for f in files},
    )


EVAL_RESULTS_HEADING = "## Evaluation results"


def record_eval_results(version: ModelVersion, entries: list[dict[str, Any]]) -> ModelRepo:
    """Write evaluation ``entries`` (Hugging Face ``model-index`` results) into the card
    of ``version``'s repo: the front matter's ``model-index`` (one model, named after the
    repo) gets them, replacing earlier results of the same task, and the README body
    gets an "Evaluation results" table of them (replacing the previous table)."""
    with transaction.atomic():
        repo = ModelRepo.objects.select_for_update().get(pk=version.repo_id)
        data = dict(repo.card_data or {})
        index = data.get("model-index")
        first = index[0] if isinstance(index, list) and index else {}
        model = first if isinstance(first, dict) else {}
        results = [r for r in model.get("results") or [] if isinstance(r, dict)]
        names = {_task_name(entry) for entry in entries}
        results = [r for r in results if _task_name(r) not in names] + list(entries)
        data["model-index"] = [{"name": repo.full_name, "results": results}]
        repo.card_data = json.loads(json.dumps(data, default=str))
        repo.card = _with_results_table(repo.card, results)
        repo.save(update_fields=["card", "card_data", "updated_at"])
    return repo


def _task_name(entry: dict[str, Any]) -> str:
    task = entry.get("task")
    return str(task.get("name", "")) if isinstance(task, dict) else ""


def _with_results_table(body: str, results: list[dict[str, Any]]) -> str:
    head, _, rest = body.partition(EVAL_RESULTS_HEADING)
    # Keep what followed the previous table's section (the next "## " heading on).
    tail = rest[rest.find("\n## ") :] if rest and "\n## " in rest else ""
    rows = [
        f"| {_task_name(r)} | {m.get('name', m.get('type', ''))} | {_number(m.get('value'))} "
        f"| {_number((m.get('args') or {}).get('stderr'))} |"
        for r in results
        for m in r.get("metrics") or []
        if isinstance(m, dict)
    ]
    table = "\n".join(
        [
            EVAL_RESULTS_HEADING,
            "",
            "| Task | Metric | Value | Stderr |",
            "|---|---|---:|---:|",
            *rows,
        ]
    )
    return f"{head.rstrip()}\n\n{table}\n{tail}".lstrip()


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "–"
