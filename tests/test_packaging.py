"""The project as an installed package (pyproject.toml), not only as a checkout.

- the wheel built from this tree holds both packages and every file in them: the app's pages,
  its Leaflet copy and Streamlit config (package data) included; nothing of assets/, bench/,
  tests/ or the root's shims; the ``sfrs`` and ``sfrs-studio`` console scripts are declared;
- installed into a fresh environment, ``sfrs --help`` and ``sfrs-studio --help`` work from a
  folder outside the checkout, and ``sfrs_core`` and ``viz_app`` come from that environment's
  site-packages, not from the checkout;
- the dependency lists are honest: every third-party import of ``sfrs_core`` is covered by the
  base dependencies, of ``viz_app`` by base + ``[app]``, of the tests by base + ``[app]`` + ``[test]``
  (a dependency's own dependencies count, as installed here).

The fresh environment reuses the packages of the one running the tests (a ``.pth`` file naming
its site-packages, which come after the new environment's own), so nothing is downloaded; the
wheel is built and installed with ``--no-deps``, ``--no-build-isolation`` and ``--no-index``.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sfrs_core", "viz_app")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PAGES = sorted(p.name for p in (ROOT / "viz_app" / "app_pages").glob("*.py"))
# What the copy of the checkout leaves out: local state, caches, builds, the shipped runs' big files.
SKIP_TOP = {".git", ".venv", "build", "dist", "data", "runs", "figs", ".cache", ".pytest_cache", ".hypothesis",
            "test-artifacts", ".whl", ".gl"}
SKIP_SUFFIXES = (".pyc", ".pt", ".npz", ".egg-info")


def _ignore(folder: str, names: list[str]) -> set[str]:
    top = Path(folder).resolve() == ROOT
    return {n for n in names if n == "__pycache__" or n.endswith(SKIP_SUFFIXES) or (top and n in SKIP_TOP)}


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=_clean_env(), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of this checkout (so the build leaves nothing in it)."""
    try:
        import setuptools  # noqa: F401
    except ImportError:
        pytest.fail("setuptools is missing from the test environment: make install-test installs it ([test] extra)")
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=_ignore)
    out = tmp / "wheel"
    build = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                  "-w", out, src], cwd=tmp)
    assert build.returncode == 0, build.stdout + build.stderr
    wheels = list(out.glob("sfrs_studio-*.whl"))
    assert len(wheels) == 1, (wheels, build.stdout)
    return wheels[0]


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (--no-deps; its dependencies through a .pth file)."""
    env_dir = tmp_path_factory.mktemp("venv") / "env"
    made = _run([sys.executable, "-m", "venv", "--without-pip", env_dir], cwd=env_dir.parent)
    assert made.returncode == 0, made.stdout + made.stderr
    py = env_dir / "bin" / "python"
    purelib = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=env_dir).stdout.strip())
    assert purelib.is_dir() and purelib.is_relative_to(env_dir), purelib
    ours = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    ours = [p for p in dict.fromkeys(ours) if Path(p).is_dir()]
    (purelib / "_test_packaging_deps.pth").write_text("".join(f"{p}\n" for p in ours))
    inst = _run([py, "-m", "pip", "install", "--no-deps", "--no-index", "--no-cache-dir", wheel], cwd=env_dir)
    assert inst.returncode == 0, inst.stdout + inst.stderr
    return env_dir


def _package_files() -> set[str]:
    """The files of both packages in the checkout: what git tracks or would add (so not what
    .gitignore leaves out), else every file but bytecode."""
    git = shutil.which("git") and subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *PACKAGES],
        cwd=ROOT, capture_output=True, text=True)
    if git and git.returncode == 0 and git.stdout:
        listed = [ROOT / name for name in git.stdout.split("\0") if name]
    else:
        listed = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*")]
    return {p.relative_to(ROOT).as_posix() for p in listed
            if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")}


def test_the_wheel_holds_both_packages_with_their_data_and_nothing_else(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    # the app: entry page, every page, the Leaflet copy, the Streamlit config
    assert PAGES, "no pages in viz_app/app_pages"
    for name in ["viz_app/app.py", "viz_app/serve.py", "viz_app/.streamlit/config.toml",
                 "viz_app/static/leaflet/leaflet.js", "viz_app/static/leaflet/leaflet.css",
                 "viz_app/static/leaflet/LICENSE", "viz_app/static/leaflet/images/marker-icon.png",
                 "sfrs_core/cli.py", "sfrs_core/__main__.py", *(f"viz_app/app_pages/{p}" for p in PAGES)]:
        assert name in names, f"{name} is not in {wheel.name}"
    # every file of both packages (new data files too: they need package-data in pyproject.toml)
    missing = sorted(_package_files() - names)
    assert not missing, f"in the checkout but not in the wheel (add them to [tool.setuptools.package-data]): {missing}"
    # nothing else: no assets/, bench/, tests/, root app.py or links
    dist_info = {n for n in names if re.match(r"sfrs_studio-[^/]+\.dist-info/", n)}
    stray = sorted(n for n in names - dist_info if n.split("/", 1)[0] not in PACKAGES)
    assert not stray, f"the wheel holds more than sfrs_core and viz_app: {stray}"
    entry_points = next(zipfile.Path(wheel, n).read_text() for n in dist_info if n.endswith("/entry_points.txt"))
    assert re.search(r"^sfrs = sfrs_core\.cli:main$", entry_points, re.M), entry_points
    assert re.search(r"^sfrs-studio = viz_app\.serve:main$", entry_points, re.M), entry_points


def test_the_installed_commands_run_outside_the_checkout(installed, tmp_path):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    assert not cwd.resolve().is_relative_to(ROOT)
    purelib = Path(_run([installed / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=cwd).stdout.strip())

    probe = _run([installed / "bin" / "python", "-c",
                  "import json, importlib.resources as r, sfrs_core, viz_app; print(json.dumps("
                  "[sfrs_core.__file__, viz_app.__file__, str(r.files('viz_app') / 'static/leaflet/leaflet.js'),"
                  " (r.files('viz_app') / '.streamlit/config.toml').is_file()]))"], cwd=cwd)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    core, app, leaflet, config = json.loads(probe.stdout.strip().splitlines()[-1])
    for f in (core, app, leaflet):
        assert Path(f).resolve().is_relative_to(purelib.resolve()), f"{f} is not from the installed package in {purelib}"
        assert not Path(f).resolve().is_relative_to(ROOT), f
    assert Path(leaflet).is_file() and config

    sfrs = _run([installed / "bin" / "sfrs", "--help"], cwd=cwd)
    assert sfrs.returncode == 0, sfrs.stdout + sfrs.stderr
    assert "usage: sfrs " in sfrs.stdout and "train" in sfrs.stdout and "prepare" in sfrs.stdout, sfrs.stdout

    studio = _run([installed / "bin" / "sfrs-studio", "--help"], cwd=cwd)
    out = studio.stdout + studio.stderr
    assert studio.returncode == 0, out
    assert "usage" in out.lower() and "--expose" in out, out
    assert not list(cwd.iterdir()), f"--help left files behind: {list(cwd.iterdir())}"


# ---------------------------------------------------------------------------- dependency lists

def _third_party_imports(path: Path) -> set[str]:
    """Top-level names of the modules ``path`` imports, less the standard library, the project's own
    packages and imports inside a ``try`` that catches ImportError (optional ones)."""
    tree = ast.parse(path.read_text(), str(path))
    optional: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                h.type is None or any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError")
                                      for n in ast.walk(h.type)) for h in node.handlers):
            optional |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return {n for n in found if n not in sys.stdlib_module_names and n not in (*PACKAGES, "tests", "bench", "__future__")}


def _closure(requirements: list[str]) -> set[str]:
    """Canonical names of ``requirements`` and of what they require, recursively, as installed here."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for sub in dist.requires or []:
            sub_req = Requirement(sub)
            if sub_req.marker is None or any(sub_req.marker.evaluate({"extra": e}) for e in ("", *req.extras)):
                todo.append(sub_req)
    return seen


@pytest.mark.parametrize("where, extras", [("sfrs_core", ()), ("viz_app", ("app",)), ("tests", ("app", "test"))])
def test_every_third_party_import_is_a_declared_dependency(where, extras):
    project = PYPROJECT["project"]
    declared = _closure([*project["dependencies"],
                         *(r for e in extras for r in project["optional-dependencies"][e])])
    providers = metadata.packages_distributions()
    # the app's plotly figures (interactive.py, and style.py's plotly_template): they may use the [app] extra
    app_side = {"sfrs_core/figures/interactive.py", "sfrs_core/figures/style.py"}
    app_declared = _closure([*project["dependencies"], *project["optional-dependencies"]["app"]])
    undeclared = {}
    for path in sorted((ROOT / where).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        allowed = declared | app_declared if rel in app_side else declared
        for module in sorted(_third_party_imports(path)):
            dists = {canonicalize_name(d) for d in providers.get(module, [])}
            if not dists & allowed:
                undeclared.setdefault(rel, []).append(f"{module} ({', '.join(sorted(dists)) or 'not installed'})")
    assert not undeclared, f"imports not covered by pyproject.toml's dependencies{list(extras) or ''}: {undeclared}"


def test_the_console_scripts_and_packages_are_declared():
    assert PYPROJECT["project"]["scripts"] == {"sfrs": "sfrs_core.cli:main", "sfrs-studio": "viz_app.serve:main"}
    find = PYPROJECT["tool"]["setuptools"]["packages"]["find"]
    assert set(find["include"]) == {"sfrs_core*", "viz_app*"}
    # the lock pins what pyproject.toml ranges, the torch the Makefile installs included
    lock = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    lock = {canonicalize_name(k): v for k, v in lock.items()}
    project = PYPROJECT["project"]
    for spec in [*project["dependencies"], *(r for rs in project["optional-dependencies"].values() for r in rs)]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is not in constraints.txt (make lock)"
        assert req.specifier.contains(lock[name], prereleases=True), f"constraints.txt's {name}=={lock[name]} is outside {spec!r}"
