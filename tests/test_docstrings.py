"""Public docstrings say what they raise (a maintainer and a user read the error contract
where the function is documented)."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "siamese_mask_rcnn"


def _raised_names(function):
    """Names of the exceptions ``function``'s own body (not a nested def or class) raises:
    ``raise ValueError(...)`` -> ``"ValueError"``, ``raise errors.Foo`` -> ``"Foo"``; a bare
    ``raise`` or a raised variable gives ``None`` (an exception passed on)."""
    names, stack = [], list(function.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Raise):
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name) and exc.id[:1].isupper():
                names.append(exc.id)
            elif isinstance(exc, ast.Attribute) and exc.attr[:1].isupper():
                names.append(exc.attr)
            else:
                names.append(None)
        stack.extend(ast.iter_child_nodes(node))
    return names


def undocumented_raisers(source, filename="<source>"):
    """``["file:line name"]`` of public functions and methods that raise but whose
    docstring (for ``__init__`` with the class docstring) does not name every exception class
    they raise; an exception passed on (bare ``raise``, a variable) needs the word "raise"."""
    found = []

    def visit(node, owner=None, prefix=""):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef) and not child.name.startswith("_"):
                visit(child, child, prefix + child.name + ".")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                public = not child.name.startswith("_") or child.name == "__init__"
                raised = _raised_names(child)
                if not public or not raised:
                    continue
                docs = ast.get_docstring(child) or ""
                if child.name == "__init__" and owner is not None:
                    docs += ast.get_docstring(owner) or ""
                named = all(name in docs for name in raised if name)
                passed_on = None not in raised or "raise" in docs.lower()
                if not (named and passed_on):
                    found.append(f"{filename}:{child.lineno} {prefix}{child.name}")

    visit(ast.parse(source))
    return found


def test_the_check_finds_an_undocumented_raise():
    source = '''
def documented(x):
    """Doc.

    Raises:
        ValueError: x < 0.
    """
    if x < 0:
        raise ValueError(x)

def undocumented(x):
    """Doc that does not say it fails."""
    if x < 0:
        raise ValueError(x)

def named_in_prose(x):
    """``KeyError`` when x is unknown."""
    raise KeyError(x)

def one_of_two_named(x):
    """``KeyError`` when x is unknown."""
    if x:
        raise KeyError(x)
    raise errors.BadValue(x)

def _private(x):
    raise ValueError(x)

def nested_only():
    """The raise belongs to the inner function."""
    def inner():
        raise ValueError()
    return inner

class Thing:
    """A thing.

    Raises:
        TypeError: bad argument.
    """
    def __init__(self, x):
        raise TypeError(x)

    def method(self):
        raise KeyError()
'''
    assert undocumented_raisers(source) == ["<source>:11 undocumented", "<source>:20 one_of_two_named", "<source>:44 Thing.method"]


def test_every_public_callable_that_raises_documents_it():
    missing = []
    for path in sorted(ROOT.rglob("*.py")):
        missing += undocumented_raisers(path.read_text(encoding="utf-8"),
                                        str(path.relative_to(ROOT.parent)))
    assert missing == [], "public callables that do not say what they raise:\n" + "\n".join(missing)
