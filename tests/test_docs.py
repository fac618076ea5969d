"""Every ```python block of the documentation runs, so no example rots.

How a page runs (the conventions are also in docs/testing.md, "The docs' own examples"):

- Its ```python blocks run in order, in a Django test database rolled back after
  the page, with handlers run inline (``DispatchCapture``). Top-level ``await`` works.
- An untitled block runs in the page's own module. A block titled with a path,
  ```python title="myapp/handlers.py"``, runs as that module (``myapp.handlers``),
  so later blocks import from it and dotted paths in settings resolve to it.
- A titled block whose path is a real file — of the docs' sample app (tests/docs_project,
  e.g. ``myapp/models.py``, which the test settings install) or of this repository (e.g.
  ``example_project/celery.py``) — is not run: it must be a verbatim excerpt of that file.
- ``title="settings.py"``: it runs as the end of a settings module (the project's settings
  are its starting names, so ``INSTALLED_APPS += [...]`` works); its ``FLUVIUS`` (all but
  ``DOMAINS`` and ``DISPATCH``) applies for the rest of the page, as ``override_settings`` would.
- After each block, the ``Domain`` classes the page defined or imported are registered
  (each replacing the domain that had its namespace, for the page only), and a module
  defining ``urlpatterns`` becomes the ``ROOT_URLCONF``.
- ``request`` is predefined: a GET request by a signed-in superuser, as in a view.
- The one escape hatch: a block whose first line is ``# not run: <why>`` is only compiled.
Other languages (bash, http, toml...) are not run.
"""

from __future__ import annotations

import ast
import copy
import inspect
import re
import sys
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from asgiref.sync import async_to_sync
from django.conf import settings
from django.test import RequestFactory, override_settings
from django.urls import clear_url_caches

from django_fluvius.delivery.handlers import handlers
from django_fluvius.delivery.projections import async_projections
from django_fluvius.domain import Domain
from django_fluvius.events.upcasting import _known_cache
from django_fluvius.events.upcasting import registry as upcasters
from django_fluvius.registry import domains
from django_fluvius.testing import DispatchCapture
from django_fluvius.write.cache import aggregate_cache

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SAMPLE = ROOT / "tests" / "docs_project"
PAGES = sorted(p for p in DOCS.rglob("*.md"))

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
NOT_RUN = re.compile(r"^#\s*not run:\s*\S")


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    title: str | None
    source: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    found = []
    for m in FENCE.finditer(text):
        info = m.group("info").strip()
        lang = info.split()[0].lower() if info else ""
        title = re.search(r'title="([^"]+)"', info)
        body = textwrap.dedent("\n".join(
            line[len(m.group("indent")):] if line.startswith(m.group("indent")) else line
            for line in m.group("body").splitlines()))
        found.append(Block(page, text.count("\n", 0, m.start()) + 2, lang, title.group(1) if title else None,
                           body))
    return found


def python_blocks(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.lang in {"python", "py"}]


def real_file_of(title: str | None) -> Path | None:
    """The real file a block's title names: in the docs' sample app, or in this repository."""
    if not title or title == "settings.py":
        return None
    for base in (SAMPLE, ROOT):
        if (base / title).is_file():
            return base / title
    return None


def normalized(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


class PageRunner:
    """Runs one page's blocks; undoes everything it registered when closed."""

    def __init__(self, page: Path, request):
        self.page = page
        self.slug = re.sub(r"\W", "_", str(page.relative_to(DOCS).with_suffix("")))
        self.request = request
        self.modules: dict[str, types.ModuleType] = {}
        self.overrides: list[override_settings] = []
        self.main = self.module(f"docs_{self.slug}")
        self.saved = (dict(domains._domains), dict(handlers._handlers), copy.deepcopy(upcasters._upcasters),
                      dict(upcasters._current), dict(upcasters._aliases), set(async_projections._classes))
        self.capture = DispatchCapture().start()

    def module(self, name: str) -> types.ModuleType:
        if name not in self.modules:
            if name in sys.modules and name not in self.modules:
                raise AssertionError(f"{self.page.name}: a block titled as module {name!r}, which already exists; "
                                     "title it with a path of the sample app to show a real file instead.")
            module = types.ModuleType(name)
            module.__file__ = f"<docs {self.page.name}: {name}>"
            module.request = self.request
            module.__package__ = name.rpartition(".")[0]  # relative imports, as in a real module
            sys.modules[name] = module
            parent, _, child = name.rpartition(".")
            if parent in sys.modules:
                setattr(sys.modules[parent], child, module)
            self.modules[name] = module
        return self.modules[name]

    def run(self, block: Block) -> None:
        source = block.source
        if NOT_RUN.match(source):
            compile(source, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            return
        real_file = real_file_of(block.title)
        if real_file is not None:
            assert normalized(source) in normalized(real_file.read_text()), (
                f"{block.where}: the block titled {block.title!r} is not a verbatim excerpt of "
                f"{real_file.relative_to(ROOT)}")
            return
        if block.title == "settings.py":
            # The end of a settings module: the project's settings are already there.
            start = {name: copy.copy(getattr(settings, name)) for name in dir(settings) if name.isupper()}
            namespace: dict = dict(start)
            exec(compile(source, block.where, "exec"), namespace)
            self.apply_settings({k: v for k, v in namespace.items() if k not in start or v is not start[k]})
            return
        target = self.main
        if block.title:
            if not block.title.endswith(".py"):
                raise AssertionError(f"{block.where}: title a Python block with a file path (x/y.py)")
            target = self.module(block.title[:-3].replace("/", "."))
        try:
            self.execute(source, block, target)
        except Exception as exc:
            raise AssertionError(f"{block.where} failed: {type(exc).__name__}: {exc}\n\n{source}") from exc

    def execute(self, source: str, block: Block, target: types.ModuleType) -> None:
        """Run statement by statement: those with a top-level ``await`` on an event loop (through
        asgiref, so the ORM calls they make still run on this thread's connection), the others as
        plain code — as the lines of an async view and of a sync one would run."""
        tree = ast.parse(source, block.where)
        for statement in tree.body:
            module = ast.Module(body=[statement], type_ignores=[])
            code = compile(module, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            result = eval(code, target.__dict__)  # noqa: S307 - the docs' own code
            if inspect.iscoroutine(result):
                async_to_sync(_await)(result)
            # What a project's settings and urls.py would have made known before any code runs.
            self.register_domains()
            self.route_urls()

    def apply_settings(self, namespace: dict) -> None:
        fluvius = namespace.get("FLUVIUS")
        if not fluvius:
            return
        current = dict(settings.FLUVIUS)
        new = {**current, **{k: v for k, v in fluvius.items() if k not in {"DOMAINS", "DISPATCH"}}}
        if "COMMAND_MIDDLEWARE" in fluvius:
            # Keep the capture's middleware outermost, as capture_dispatch() set it.
            new["COMMAND_MIDDLEWARE"] = [self.capture.middleware, *fluvius["COMMAND_MIDDLEWARE"]]
        self.override(FLUVIUS=new)

    def override(self, **values) -> None:
        override = override_settings(**values)
        override.enable()
        self.overrides.append(override)

    def register_domains(self) -> None:
        latest: dict[str, type] = {}
        for module in self.modules.values():
            for value in list(vars(module).values()):
                if (isinstance(value, type) and issubclass(value, Domain) and value is not Domain
                        and getattr(value, "__namespace__", None) and getattr(value, "__aggregate__", None)):
                    latest[value.__namespace__] = value
        for namespace, domain_class in latest.items():
            if namespace in domains and domains.get(namespace) is domain_class:
                continue
            domains.unregister(namespace)
            domains.register(domain_class)

    def route_urls(self) -> None:
        for name, module in self.modules.items():
            if hasattr(module, "urlpatterns") and settings.ROOT_URLCONF != name:
                self.override(ROOT_URLCONF=name)
                clear_url_caches()

    def close(self) -> None:
        # Settings overrides unwind in the reverse order of their making: the page's first,
        # then the capture's (made before them).
        for override in reversed(self.overrides):
            override.disable()
        self.capture.stop()
        clear_url_caches()
        for name in self.modules:
            sys.modules.pop(name, None)
            parent, _, child = name.rpartition(".")
            if parent in sys.modules and getattr(sys.modules[parent], child, None) is self.modules[name]:
                delattr(sys.modules[parent], child)
        domains._domains.clear()
        domains._domains.update(self.saved[0])
        for name in [n for n in handlers._handlers if n not in self.saved[1]]:
            handlers.unregister(name)
        handlers._handlers.update(self.saved[1])
        for name in [n for n in async_projections._classes if n not in self.saved[5]]:
            async_projections.unregister(name)
        upcasters._upcasters, upcasters._current, upcasters._aliases = self.saved[2:5]
        _known_cache.clear()
        aggregate_cache.clear()


async def _await(coroutine):
    return await coroutine


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_docs_page_runs(page, db, django_user_model):
    user = django_user_model.objects.create_superuser("alice", "alice@example.com", "secret")
    request = RequestFactory().get("/")
    request.user = user
    before = (settings.FLUVIUS, settings.ROOT_URLCONF)
    runner = PageRunner(page, request)
    try:
        for block in python_blocks(page):
            runner.run(block)
    finally:
        runner.close()
    assert (settings.FLUVIUS, settings.ROOT_URLCONF) == before, "the page left its settings behind"


# -- the harness itself ---------------------------------------------------------------------


def test_fences_are_found_with_titles_indentation_and_lines(tmp_path):
    page = tmp_path / "p.md"
    page.write_text('# T\n\n```python title="myapp/x.py"\na = 1\n```\n\n!!! note\n    ```py\n    b = 2\n    ```\n'
                    "\n```bash\nls\n```\n")
    found = blocks(page)
    assert [(b.lang, b.title, b.source.strip(), b.line) for b in found] == [
        ("python", "myapp/x.py", "a = 1", 4), ("py", None, "b = 2", 9), ("bash", None, "ls", 13)]


def test_docs_exist_and_every_page_is_in_the_nav():
    assert PAGES, "docs/ has no pages"
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text().replace("!!python/name:", ""))

    def walk(item):
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            for value in item.values():
                yield from walk(value)
        elif isinstance(item, list):
            for value in item:
                yield from walk(value)

    in_nav = {p for p in walk(config["nav"]) if p.endswith(".md")}
    missing = sorted(str(p.relative_to(DOCS)) for p in PAGES if str(p.relative_to(DOCS)) not in in_nav)
    assert not missing, f"pages missing from mkdocs.yml's nav: {missing}"


def test_every_setting_is_documented():
    from django_fluvius.conf import DEFAULTS

    text = (DOCS / "settings.md").read_text()
    missing = [name for name in DEFAULTS if f"`{name}`" not in text]
    assert not missing, f"FLUVIUS settings missing from docs/settings.md: {missing}"


def test_escape_hatch_stays_small():
    """Blocks that only compile must say why, and stay rare."""
    skipped = [b for p in PAGES for b in python_blocks(p) if NOT_RUN.match(b.source)]
    total = sum(len(python_blocks(p)) for p in PAGES)
    assert len(skipped) <= max(3, total // 15), [b.where for b in skipped]  # at most ~7%


def test_titled_blocks_of_other_languages_are_excerpts_of_their_files():
    """A Procfile, a systemd unit, a config shown under its path must be what the repository holds."""
    checked = []
    for page in PAGES:
        for block in blocks(page):
            real_file = real_file_of(block.title)
            if block.lang in {"python", "py"} or real_file is None:
                continue
            assert normalized(block.source) in normalized(real_file.read_text()), (
                f"{block.where}: the block titled {block.title!r} is not a verbatim excerpt of "
                f"{real_file.relative_to(ROOT)}")
            checked.append(block.title)
    assert "example_project/deploy/Procfile" in checked
