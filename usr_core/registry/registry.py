"""registry.yaml: load, canonical form, hashes, register / ensure, freeze files (R1-R14)."""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import yaml

from ..contract import STATE_COLUMNS, STATE_DESCRIPTION, STATE_NS, STATE_OWNER
from ..errors import NamespaceError, SchemaError, environment_failure, option_hint
from ..layout import check_namespace_name, registry_lock_path, registry_path
from ..storage.atomic import write_bytes
from ..storage.locks import file_lock
from .types import canonicalize_type_string, parse_columns_spec, parse_type

Registry = dict  # {ns: {"columns": [{"name", "type"}], "owner": str|None, "description": str|None}}


def state_entry() -> dict:
    return {"columns": [{"name": n, "type": t} for n, t in STATE_COLUMNS],
            "owner": STATE_OWNER, "description": STATE_DESCRIPTION}


def _check_columns(ns: str, columns, *, canonicalize: bool, source: str | None = None) -> list[dict]:
    if not isinstance(columns, list):
        raise SchemaError(f"Registry namespace {ns!r}: 'columns' must be a list.",
                          hint="Write columns as a YAML list of {name, type} mappings.")
    if not columns:
        raise SchemaError(f"Namespace {ns!r} has no columns.", hint="Give at least one <ns>__<field>:<type> column.")
    out, seen = [], set()
    for col in columns:
        if not isinstance(col, dict) or "name" not in col or "type" not in col:
            raise SchemaError(f"Registry namespace {ns!r}: every column needs 'name' and 'type'.",
                              hint="Write each column as {name: <ns>__<field>, type: <type>}.")
        name, typ = str(col["name"]), str(col["type"])
        prefix = f"{ns}__"
        if not name.startswith(prefix) or len(name) == len(prefix):
            raise SchemaError(f"Column {name!r} of namespace {ns!r} must be named {prefix}<field>.",
                              hint=f"Rename it to {prefix}<field> with a non-empty field.")
        if name in seen:
            raise SchemaError(f"Column {name!r} appears twice in namespace {ns!r}.", hint="Column names must be unique.")
        seen.add(name)
        try:
            typ = canonicalize_type_string(typ) if canonicalize else (parse_type(typ) and typ)
        except SchemaError as exc:
            where = f"{source}: " if source else ""
            fix = f"Fix or remove column {name} in {source} by hand. " if source else ""
            raise SchemaError(f"{where}column {name!r} of namespace {ns!r}: {exc}", hint=fix + (exc.hint or "")) \
                from None
        out.append({"name": name, "type": typ})
    return out


def _check_state(entry: dict) -> None:
    want = {n: t for n, t in STATE_COLUMNS}
    have = {c["name"]: c["type"] for c in entry["columns"]}
    missing = [n for n in want if n not in have]
    extra = [n for n in have if n not in want]
    mismatched = [n for n in want if n in have and canonicalize_type_string(have[n]) != want[n]]
    order_ok = [c["name"] for c in entry["columns"]] == list(want)
    if missing or extra or mismatched or not order_ok:
        raise SchemaError(
            f"Reserved namespace usr_state is non-standard: missing={missing} extra={extra} mismatched={mismatched}.",
            hint="usr_state must hold exactly the five usr_state__ columns of the contract, in order.")


def parse_registry(data, source: str = "registry.yaml") -> Registry:
    if not isinstance(data, dict) or not isinstance(data.get("namespaces"), dict):
        raise SchemaError(f"{source}: expected a mapping with a 'namespaces' mapping.",
                          hint="Start the file with 'namespaces:' followed by one mapping per namespace.")
    reg: Registry = {}
    for ns, entry in data["namespaces"].items():
        ns = str(ns)
        if not isinstance(entry, dict):
            raise SchemaError(f"{source}: namespace {ns!r} must be a mapping.",
                              hint="Give each namespace 'columns', 'owner' and 'description'.")
        if ns != STATE_NS:
            try:
                check_namespace_name(ns)
            except NamespaceError as exc:  # R1: every load error is a SchemaError
                raise SchemaError(f"{source}: {exc}", hint=exc.hint) from None
        cols = _check_columns(ns, entry.get("columns"), canonicalize=False, source=source)
        owner, desc = entry.get("owner"), entry.get("description")
        for field, value in (("owner", owner), ("description", desc)):
            if isinstance(value, (dict, list)):
                raise SchemaError(f"{source}: namespace {ns!r} {field} must be a string or null, not a "
                                  f"{type(value).__name__}.", hint=f"Write {field}: <text> or {field}: null.")
        reg[ns] = {"columns": cols, "owner": None if owner is None else str(owner),
                   "description": None if desc is None else str(desc)}
    if STATE_NS not in reg:
        raise SchemaError(f"{source}: reserved namespace usr_state is missing: missing={[n for n, _ in STATE_COLUMNS]}",
                          hint="Register any namespace with USR to add it, or copy it from the contract.")
    _check_state(reg[STATE_NS])
    return reg


_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present; both are safe loaders

# Bounds checked on the parser's event stream BEFORE any object is built (issue 13 item 7: a 1 KB file of
# aliases expanded to gigabytes). A registry is small and shallow: namespaces > ns > columns > [ {name, type} ].
MAX_REGISTRY_BYTES = 2 << 20
MAX_YAML_DEPTH = 16
MAX_SCALAR_CHARS = 64 << 10
MAX_YAML_NODES = 40_000  # ~8,000 columns; building 40k nodes already takes about half a second


def _refuse_yaml(source: str, what: str, mark=None) -> SchemaError:
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return SchemaError(f"{source}: {what}{where}; refused before loading anything.",
                       hint="Write registry.yaml as plain YAML (`usr namespace register` writes it for you): no "
                            "anchors (&), aliases (*), merge keys (<<) or tags (!), nesting and sizes within "
                            "bounds.")


def _check_yaml_events(text: str, source: str) -> None:
    """Refuse anchors, aliases, merge keys, explicit tags, deep nesting and huge scalars (streamed events)."""
    depth = nodes = 0
    try:
        for event in yaml.parse(text, Loader=_SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise _refuse_yaml(source, f"YAML alias *{event.anchor}", event.start_mark)
            if not isinstance(event, yaml.NodeEvent):
                if isinstance(event, yaml.CollectionEndEvent):
                    depth -= 1
                continue
            nodes += 1
            if nodes > MAX_YAML_NODES:
                raise _refuse_yaml(source, f"more than {MAX_YAML_NODES} YAML nodes", event.start_mark)
            if event.anchor is not None:
                raise _refuse_yaml(source, f"YAML anchor &{event.anchor}", event.start_mark)
            explicit = event.tag is not None and not (isinstance(event, yaml.ScalarEvent) and event.implicit[0]) \
                and not (isinstance(event, yaml.CollectionStartEvent) and event.implicit)
            if explicit:
                raise _refuse_yaml(source, f"YAML tag {event.tag}", event.start_mark)
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise _refuse_yaml(source, f"YAML nested deeper than {MAX_YAML_DEPTH} levels", event.start_mark)
            elif isinstance(event, yaml.ScalarEvent):
                if len(event.value) > MAX_SCALAR_CHARS:
                    raise _refuse_yaml(source, f"a YAML value of {len(event.value)} characters (limit "
                                               f"{MAX_SCALAR_CHARS})", event.start_mark)
                if event.value == "<<" and event.style is None:
                    raise _refuse_yaml(source, "YAML merge key <<", event.start_mark)
    except yaml.YAMLError as exc:
        raise SchemaError(f"{source} is not valid YAML: {exc}", hint="Fix the YAML syntax.") from None


def safe_load_yaml(text: str, source: str = "registry.yaml"):
    """Parse registry YAML: bounded size, no anchors/aliases/merge keys/tags, bounded depth (SchemaError)."""
    if len(text) > MAX_REGISTRY_BYTES:
        raise _refuse_yaml(source, f"{len(text)} characters (limit {MAX_REGISTRY_BYTES})")
    _check_yaml_events(text, source)
    try:
        return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a safe loader, on checked input
    except yaml.YAMLError as exc:
        raise SchemaError(f"{source} is not valid YAML: {exc}", hint="Fix the YAML syntax.") from None


def _read_registry_text(path: Path) -> str:
    """The file's text, reading at most MAX_REGISTRY_BYTES + 1 bytes (a huge file is refused unread)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_REGISTRY_BYTES + 1)
    except OSError as exc:
        failure = environment_failure(exc, f"Cannot read {path}")
        if failure is None:
            raise
        raise failure from exc
    if len(data) > MAX_REGISTRY_BYTES:
        raise _refuse_yaml(str(path), f"more than {MAX_REGISTRY_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{path} is not UTF-8 text: {exc}", hint="Save registry.yaml as UTF-8.") from None


def load_registry(root, required: bool = True) -> Registry | None:
    """Load and check `<root>/registry.yaml` (R1); None when absent and not required. Not cached: a caller that
    needs it several times (a transaction, a reader) keeps the returned mapping for its own lifetime."""
    path = registry_path(Path(root))
    if not path.is_file():
        if required:
            raise SchemaError(f"Registry required: {path} not found.",
                              hint="Create it with register_namespace(root, NAME, 'NAME__field:type').",
                              cli_hint="Create it with `usr namespace register NAME --columns NAME__field:type`.")
        return None
    return parse_registry(safe_load_yaml(_read_registry_text(path), str(path)), str(path))


class RegistryCache:
    """One root's registry.yaml, loaded and hashed once per version of the file.

    Lifetime: owned by one `Writer` (so, one `Dataset`) or one reader; no module state.  A version is the
    file's bytes (a registry is small: reading it costs microseconds, parsing, checking and hashing it
    milliseconds), so a write by any process is seen on the next `load`, whatever the clock or inode reuse.
    `load` hands out a private copy; `hash` and `contract_hash` answer from the cache only for a registry
    equal to the cached one (dict equality), else compute."""

    def __init__(self, root):
        self.root = Path(root)
        self._text: str | None = None
        self._reg: Registry | None = None
        self._hash: str | None = None
        self._contracts: dict[str, str] = {}

    def load(self, required: bool = True) -> Registry | None:
        path = registry_path(self.root)
        if not path.is_file():
            self._text = self._reg = self._hash = None
            return load_registry(self.root, required=required)
        text = _read_registry_text(path)
        if text != self._text:
            reg = parse_registry(safe_load_yaml(text, str(path)), str(path))
            self._text, self._reg, self._hash, self._contracts = text, reg, None, {}
        return copy.deepcopy(self._reg)

    def hash(self, reg: Registry) -> str:
        if self._reg is None or reg != self._reg:
            return hash_registry(reg)
        if self._hash is None:
            self._hash = hash_registry(self._reg)
        return self._hash

    def contract_hash(self, reg: Registry, ns: str) -> str:
        if self._reg is None or reg != self._reg:
            return namespace_contract_hash(reg, ns)
        if ns not in self._contracts:
            self._contracts[ns] = namespace_contract_hash(self._reg, ns)
        return self._contracts[ns]


_CDumper = getattr(yaml, "CSafeDumper", None)
_SHORT_ASCII = 50  # no scalar this short can reach the 80-column folding at the registry's indentation


def _same_in_libyaml(obj) -> bool:
    """Every scalar is printable ASCII, or ASCII of at most _SHORT_ASCII characters (control characters
    are escaped in double quotes, which the two emitters fold differently past 80 columns)."""
    if obj is None:
        return True
    if isinstance(obj, str):
        return obj.isascii() and (len(obj) <= _SHORT_ASCII or obj.isprintable())
    if isinstance(obj, dict):
        return all(_same_in_libyaml(k) and _same_in_libyaml(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_same_in_libyaml(v) for v in obj)
    return False


def _safe_dump(payload: dict) -> str:
    """PyYAML's safe_dump(payload, sort_keys=True) (R8). libyaml's emitter writes the same bytes for printable
    ASCII and short ASCII scalars (tests/core/test_registry.py compares them) at a tenth of the cost; anything
    else takes the pure Python emitter, which folds and escapes non-ASCII and long escaped text its own way."""
    if _CDumper is not None and _same_in_libyaml(payload):
        return yaml.dump(payload, Dumper=_CDumper, sort_keys=True)
    return yaml.safe_dump(payload, sort_keys=True)


def canonical_bytes(reg: Registry) -> bytes:
    """R8: the canonical serialisation (also the form registry.yaml is written in)."""
    payload = {"namespaces": {ns: {"owner": e["owner"], "description": e["description"],
                                   "columns": [{"name": c["name"], "type": c["type"]} for c in e["columns"]]}
                              for ns, e in reg.items()}}
    return _safe_dump(payload).encode("utf-8")


def hash_registry(reg: Registry) -> str:
    return hashlib.sha256(canonical_bytes(reg)).hexdigest()


def registry_hash(root) -> str | None:
    reg = load_registry(root, required=False)
    return None if reg is None else hash_registry(reg)


def namespace_contract_hash(entries: Registry, ns: str) -> str:
    """R9: sha256 of safe_dump({namespace, columns}, sort_keys=True)."""
    if ns not in entries:
        raise SchemaError(f"Namespace {ns!r} is not registered.", hint="Register it with register_namespace(root, ...).",
                          cli_hint="Register it with `usr namespace register`.")
    cols = [{"name": c["name"], "type": c["type"]} for c in entries[ns]["columns"]]
    text = _safe_dump({"namespace": ns, "columns": cols})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def save_registry(root, reg: Registry) -> None:
    root = Path(root)
    write_bytes(registry_path(root), canonical_bytes(reg), label="registry")


def _mutate(root, change) -> Registry:
    """Run change(reg) under the registry lock (A5) and write atomically if it reports a change."""
    root = Path(root)
    if not root.is_dir():
        raise SchemaError(f"Root {root} is not a directory.", hint="Create the root directory first.")
    with file_lock(registry_lock_path(root), what="registry lock"):
        reg = load_registry(root, required=False) or {}
        new = copy.deepcopy(reg)
        changed = change(new)
        if STATE_NS not in new:
            new = {**new, STATE_NS: state_entry()}
            changed = True
        if changed:
            parse_registry({"namespaces": copy.deepcopy(new)})  # validate before writing
            save_registry(root, new)
        return new


def _new_entry(ns: str, cols: list, owner, description) -> dict:
    if ns == STATE_NS:  # R3: the reserved entry's owner/description default to the contract's
        owner = STATE_OWNER if owner is None else owner
        description = STATE_DESCRIPTION if description is None else description
    return {"columns": cols, "owner": owner, "description": description}


def register_namespace(root, namespace: str, columns, owner=None, description=None, overwrite: bool = False) -> Registry:
    """R10."""
    if namespace == STATE_NS:
        cols = _check_columns(namespace, columns if isinstance(columns, list) else parse_columns(columns),
                              canonicalize=True)
        _check_state({"columns": cols})
    else:
        check_namespace_name(namespace)
    if isinstance(columns, str):
        columns = parse_columns(columns)
    cols = _check_columns(namespace, list(columns or []), canonicalize=True)

    def change(reg: Registry) -> bool:
        if namespace in reg and not overwrite:
            raise SchemaError(f"Namespace {namespace!r} already registered. Use --overwrite to replace it.",
                              **option_hint("Pass {} to replace the entry.", "overwrite"))
        reg[namespace] = _new_entry(namespace, cols, owner, description)
        return True

    return _mutate(root, change)


def ensure_registry_entries(root, entries: dict) -> Registry:
    """R11: additive, idempotent; entries = {ns: {"columns": [...] or spec, "owner", "description"}}."""
    prepared = {}
    for ns, entry in entries.items():
        if ns != STATE_NS:
            check_namespace_name(ns)
        cols = entry.get("columns", [])
        cols = parse_columns(cols) if isinstance(cols, str) else cols
        prepared[ns] = (_check_columns(ns, list(cols), canonicalize=True), entry.get("owner"), entry.get("description"))

    def change(reg: Registry) -> bool:
        changed = False
        for ns, (cols, owner, desc) in prepared.items():
            cur = reg.get(ns)
            if cur is None:
                reg[ns] = _new_entry(ns, cols, owner, desc)
                changed = True
                continue
            have = {c["name"]: c["type"] for c in cur["columns"]}
            for c in cols:
                if c["name"] in have:
                    if canonicalize_type_string(have[c["name"]]) != c["type"]:
                        raise SchemaError(
                            f"Type conflict for {c['name']}: registered {have[c['name']]}, requested {c['type']}.",
                            hint="Register a new column name or overwrite the namespace explicitly.")
                else:
                    cur["columns"].append(c)
                    changed = True
            if cur["owner"] is None and owner is not None:
                cur["owner"] = owner
                changed = True
            if cur["description"] is None and desc is not None:
                cur["description"] = desc
                changed = True
        return changed

    return _mutate(root, change)


def parse_columns(spec: str) -> list[dict]:
    return parse_columns_spec(spec)


def column_types(reg: Registry, ns: str) -> dict[str, str]:
    return {c["name"]: c["type"] for c in reg[ns]["columns"]}


def write_freeze_file(freeze_path: Path, reg: Registry) -> bool:
    """R13: write the frozen registry if absent; returns True when written."""
    if freeze_path.exists():
        return False
    write_bytes(freeze_path, canonical_bytes(reg), label="freeze")
    return True


def load_frozen(freeze_path: Path) -> Registry:
    return parse_registry(safe_load_yaml(_read_registry_text(freeze_path), str(freeze_path)), str(freeze_path))
