"""Loading a config file: read, validate, resolve relative paths, check the files it names.

No I/O here beyond reading the file (and checking that the files it points at exist).
Relative paths in the file are resolved against the file's own folder, so a config can be
moved together with its models.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Annotated, Any, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from edgeyolo.config.models import Config
from edgeyolo.config.mqtt_checks import mqtt_problems
from edgeyolo.config.names import id_warnings
from edgeyolo.errors import ConfigError
from edgeyolo.secrets import MASK, is_secret_key, scrub, secret_values, secrets_in_text
from edgeyolo.sources.kinds import (
    is_file_path,
    pipeline_files,
    resolve_pipeline_files,
    source_kind,
)

Loc = tuple[int | str, ...]


class ConfigIssue(BaseModel):
    """One problem found in a config file."""

    model_config = ConfigDict(frozen=True)
    loc: str
    value: Annotated[Any, Field(repr=False)] = None
    message: str

    def __str__(self) -> str:
        shown = "" if self.value is None else f" = {self.value!r}"
        return f"{self.loc}{shown}: {self.message}"


class ConfigValidationError(ConfigError):
    """A config file failed validation; ``issues`` lists every problem found."""

    def __init__(self, path: Path, issues: list[ConfigIssue]) -> None:
        self.path = path
        self.issues = issues
        lines = "\n".join(f"  {i}" for i in issues)
        super().__init__(f"{path}: {len(issues)} problem(s) in the configuration:\n{lines}")


def _loc_str(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _lookup(data: Any, loc: Loc) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


class _StrictLoader(yaml.SafeLoader):
    """``yaml.safe_load``, except that a key given twice in one mapping is an error: YAML
    keeps the last one silently, so a second ``conf:`` further down would win unseen."""


def _unique_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` then overriding one of its keys is what merges are for
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:
            continue  # an unhashable key: construct_mapping refuses it with its own message
        if first is not None:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"found key {key!r} a second time (first on line {first + 1}); "
                "YAML would keep only the last one: remove one of them",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The config section class in a field's type (``X | None``, ``list[X]`` see through)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for a in get_args(annotation) if (m := _model_in(a)) is not None), None)


def _has_secret(annotation: Any) -> bool:
    return annotation is SecretStr or any(_has_secret(a) for a in get_args(annotation))


def _sections(loc: Loc) -> tuple[list[type[BaseModel]], bool]:
    """The config section classes along key path ``loc`` (its last part excluded), from the
    top, and whether the whole path is in the schema (not below a plain dict, say)."""
    found: list[type[BaseModel]] = [Config]
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = found[-1].model_fields.get(part)
        model = None if field is None else _model_in(field.annotation)
        if model is None:
            return found, False
        found.append(model)
    return found, True


def _in_secret_section(loc: Loc) -> bool:
    """Whether ``loc`` lies in a section with a secret field (sinks.mqtt, http): a misspelled
    key there (``tokn``, ``passwrd``) may well hold that secret."""
    sections = _sections(loc)[0][1:]
    return any(_has_secret(f.annotation) for m in sections for f in m.model_fields.values())


def _suggestion(loc: Loc) -> str:
    """For an unknown key: the known key it is probably a misspelling of, or the section it
    belongs in (``mqtt`` at the top is ``sinks.mqtt``)."""
    sections, complete = _sections(loc)
    key = loc[-1] if loc else None
    if not complete or not isinstance(key, str):
        return ""
    close = difflib.get_close_matches(key, list(sections[-1].model_fields), n=1, cutoff=0.75)
    if close:
        return f"; did you mean {close[0]!r}?"
    if len(sections) == 1:  # at the top: a section that lives one level down (not in a list)
        for name, field in Config.model_fields.items():
            sub = field.annotation if isinstance(field.annotation, type) else None
            if sub is not None and issubclass(sub, BaseModel) and key in sub.model_fields:
                return f"; did you mean '{name}.{key}'?"
    return ""


def _issues_from(exc: ValidationError, raw: Any) -> list[ConfigIssue]:
    secrets = secret_values(raw)
    issues = []
    for err in exc.errors(include_url=False):
        # pydantic puts the union branch name into loc (e.g. 'int' / 'str'); drop it.
        loc = tuple(p for p in err["loc"] if p not in {"int", "str", "list[str]", "path"})
        msg = err["msg"].removeprefix("Value error, ")
        unknown = err["type"] == "extra_forbidden"
        value = err.get("input") if unknown else _lookup(raw, loc)
        if unknown:
            msg = "unknown key (check the spelling; see config/example.yaml for every key)"
            msg += _suggestion(loc)
        if isinstance(value, dict | list):
            value = None  # whole sections are not worth echoing back
        elif value is not None and (
            any(is_secret_key(p) for p in loc) or (unknown and _in_secret_section(loc))
        ):
            value = MASK  # a secret, or a misspelled key of a section that holds one
        elif value is not None and not isinstance(value, bool):
            shown = scrub(str(value), secrets)
            value = shown if isinstance(value, str) or shown != str(value) else value
        issues.append(ConfigIssue(loc=_loc_str(loc), value=value, message=scrub(msg, secrets)))
    return issues


def _resolve_paths(cfg: Config, base: Path) -> Config:
    def rel(p: Path) -> Path:
        p = p.expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    models = [
        m.model_copy(
            update={
                "path": rel(m.path),
                "labels": rel(m.labels) if isinstance(m.labels, Path) else m.labels,
            }
        )
        for m in cfg.models
    ]
    cameras = []
    for c in cfg.cameras:
        src = c.source
        if isinstance(src, str) and is_file_path(src):
            src = str(rel(Path(src)))
        elif isinstance(src, str) and source_kind(src) == "gstreamer":
            src = resolve_pipeline_files(src, base)
        cameras.append(c.model_copy(update={"source": src}))
    trt = cfg.tensorrt.model_copy(update={"cache_dir": rel(cfg.tensorrt.cache_dir)})
    return cfg.model_copy(update={"models": models, "cameras": cameras, "tensorrt": trt})


def _not_a_file(path: str | Path) -> str:
    return "a folder, not a file" if Path(path).is_dir() else "no such file"


def check_files(cfg: Config, path: Path) -> list[ConfigIssue]:
    """Problems with files the config points at (models, labels, video files, TLS files, the
    JSON-lines path) and MQTT topics too long to publish."""
    issues = []
    for i, m in enumerate(cfg.models):
        if not m.path.is_file():
            issues.append(
                ConfigIssue(loc=f"models[{i}].path", value=str(m.path), message=_not_a_file(m.path))
            )
        if isinstance(m.labels, Path) and not m.labels.is_file():
            issues.append(
                ConfigIssue(loc=f"models[{i}].labels", value=str(m.labels), message="no such file")
            )
    for i, c in enumerate(cfg.cameras):
        if not isinstance(c.source, str):
            continue
        if is_file_path(c.source) and not Path(c.source).is_file():
            issues.append(
                ConfigIssue(
                    loc=f"cameras[{i}].source", value=c.source, message=_not_a_file(c.source)
                )
            )
        elif source_kind(c.source) == "gstreamer":
            issues += [
                ConfigIssue(
                    loc=f"cameras[{i}].source",
                    value=c.source,
                    message=f"filesrc location={f}: no such file",
                )
                for f in pipeline_files(c.source)
                if "%" not in f and not Path(f).exists()
            ]
    issues += [ConfigIssue(loc=k, value=v or None, message=m) for k, v, m in mqtt_problems(cfg)]
    jsonl = cfg.sinks.jsonl
    if jsonl.enabled and jsonl.path != "-":
        problem = unwritable(Path(jsonl.path))
        if problem:
            issues.append(ConfigIssue(loc="sinks.jsonl.path", value=jsonl.path, message=problem))
    del path
    return issues


def unwritable(path: Path) -> str | None:
    """Why events cannot be appended to ``path``, or None when they can (as far as the file
    system says before trying: permissions, a read-only mount, a missing folder)."""
    if path.is_dir():
        return "is a folder; give a file name"
    if path.exists():
        ok = os.access(path, os.W_OK)
        return None if ok else "cannot write to this file (permissions or a read-only file system)"
    parent = path.parent
    if not parent.is_dir():
        return f"folder {parent} does not exist"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create a file in {parent} (permissions or a read-only file system)"
    return None


def parse_config(raw: Any, path: Path) -> Config:
    """Validate already-parsed YAML ``raw`` read from ``path`` (paths resolved against it)."""
    if not isinstance(raw, dict):
        raise ConfigValidationError(
            path, [ConfigIssue(loc="(top level)", message="expected a mapping of keys to values")]
        )
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigValidationError(path, _issues_from(exc, raw)) from exc
    cfg = _resolve_paths(cfg, path.parent)
    missing = check_files(cfg, path)
    if missing:
        raise ConfigValidationError(path, missing)
    return cfg


def load_config(path: Path) -> Config:
    """Read, validate and resolve the config file at ``path``.

    Raises ``ConfigError`` naming the file (unreadable, not YAML) or ``ConfigValidationError``
    listing every problem as key path, value and message.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}: not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} "
            f"(line {line}); save the file as UTF-8"
        ) from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        for mark in (getattr(exc, "context_mark", None), getattr(exc, "problem_mark", None)):
            if mark is not None:
                mark.name = path.name  # not "<unicode string>": the file, as the user named it
        # YAML errors quote the offending line, which may hold a password.
        shown = scrub(str(exc), secrets_in_text(text))
        raise ConfigError(f"{path}: not valid YAML: {shown}") from None
    return parse_config(raw, path)


def config_warnings(cfg: Config) -> list[str]:
    """Things that work but that the user probably wants to change (printed, not refused)."""
    warnings = _untracked_zones(cfg)
    mqtt = cfg.sinks.mqtt
    if mqtt is None and not cfg.sinks.jsonl.enabled and not cfg.http.enabled:
        warnings.append(
            "no output: sinks.jsonl.enabled is false, sinks.mqtt is off and http is off, "
            "so the detections go nowhere (turn one on, or run with --mqtt-url / --http)"
        )
    if mqtt is None or not mqtt.discovery.enabled:
        return warnings
    return [
        *warnings,
        *id_warnings("cameras", [c.name for c in cfg.cameras]),
        *id_warnings("models", [m.name for m in cfg.models]),
    ]


def _untracked_zones(cfg: Config) -> list[str]:
    """Zones and lines count tracked objects only: on a camera without a tracked model they
    never produce anything."""
    out = []
    for i, cam in enumerate(cfg.cameras):
        if not (cam.zones or cam.lines):
            continue
        if any(m.tracking.enabled for m in cfg.models_for(cam.name)):
            continue
        names = ", ".join([z.name for z in cam.zones] + [ln.name for ln in cam.lines])
        out.append(
            f"cameras[{i}] {cam.name!r}: its zones and lines ({names}) count tracked objects, but "
            "no model on it has tracking.enabled: true, so they count nothing"
        )
    return out
