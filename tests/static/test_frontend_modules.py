"""Static checks of the web page's ES modules (frontend/*.js); no browser needed.

The page is plain ES modules without a build step, so nothing else notices a module that
imports a name another one does not export, an import cycle, or a server that sends the
modules with a MIME type the browser refuses for `<script type="module">`.
"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import FRONTEND_DIR, create_app

ENTRY = "main.js"
MAX_LINES = 400
IMPORT = re.compile(r'^import \{([^}]*)\} from "\./([\w-]+\.js)";', re.M)
ANY_IMPORT = re.compile(r"^\s*import\b|\bimport\(", re.M)
EXPORT = re.compile(r"^export (?:async )?(?:function\*?|const|let|class) ([\w$]+)", re.M)
JAVASCRIPT_TYPES = ("text/javascript", "application/javascript")


def modules() -> dict[str, str]:
    found = {path.name: path.read_text(encoding="utf-8") for path in FRONTEND_DIR.glob("*.js")}
    assert ENTRY in found, f"no {ENTRY} in {FRONTEND_DIR}"
    return found


def imports(source: str) -> dict[str, set[str]]:
    """{module: names} this source imports, from its `import { a, b } from "./m.js";` lines."""
    found: dict[str, set[str]] = {}
    for names, module in IMPORT.findall(source):
        found.setdefault(module, set()).update(n.strip() for n in names.split(",") if n.strip())
    return found


def test_index_loads_only_the_entry_module() -> None:
    html = (FRONTEND_DIR / "index.html").read_text(encoding="utf-8")
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts == [f'<script type="module" src="{ENTRY}">'], scripts


def test_every_import_names_an_export_and_every_export_is_used() -> None:
    sources = modules()
    exported = {name: set(EXPORT.findall(source)) for name, source in sources.items()}
    used: set[tuple[str, str]] = set()
    for name, source in sources.items():
        statements = ANY_IMPORT.findall(source)
        assert len(statements) == len(IMPORT.findall(source)), (
            f'{name}: only `import {{ … }} from "./module.js";` on one line is used in this page'
        )
        for module, names in imports(source).items():
            assert module in sources, f"{name} imports {module}, which does not exist"
            missing = names - exported[module]
            assert not missing, f"{name} imports {sorted(missing)}, which {module} does not export"
            used.update((module, n) for n in names)
    unused = sorted(
        f"{m}: {n}" for m, names in exported.items() for n in names if (m, n) not in used
    )
    assert not unused, f"exported but imported nowhere: {unused}"


def test_no_import_cycle_and_every_module_is_reached_from_the_entry() -> None:
    graph = {name: set(imports(source)) for name, source in modules().items()}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            cycle = " -> ".join((*path[path.index(name) :], name))
            pytest.fail(f"import cycle: {cycle}")
        if name in done:
            return
        for dependency in sorted(graph[name]):
            visit(dependency, (*path, name))
        done.add(name)

    visit(ENTRY, ())
    assert done == set(graph), f"not imported by the page: {sorted(set(graph) - done)}"


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_reads_in_one_sitting(name: str) -> None:
    lines = modules()[name].count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by component"


def test_the_api_serves_every_module_as_javascript() -> None:
    # No `with`: the lifespan (Redis, Milvus, the model) is not needed for static files.
    client = TestClient(create_app(Settings()))
    page = client.get("/")
    assert page.status_code == 200 and ENTRY in page.text
    for name in modules():
        response = client.get(f"/{name}")
        assert response.status_code == 200, name
        media_type = response.headers["content-type"].split(";")[0].strip()
        assert media_type in JAVASCRIPT_TYPES, f"/{name} is served as {media_type}"
        policy = response.headers.get("content-security-policy")
        assert policy is None or "'self'" in policy, f"CSP {policy!r} blocks the modules"
