"""`make kaggle` / `make kaggle-push`: the generated Kaggle folders are complete and consistent, offline."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tools package lives at the repository root

from tools import kaggle
from tools.kaggle import (
    KAGGLE_PROVIDED,
    MODEL_PARAM,
    MODEL_SOURCE,
    SPECS,
    BuildOptions,
    KaggleError,
    Pin,
    build,
    download_wheels,
    pip_download_commands,
    push,
    read_pins,
    rewrite_parameters,
    select_wheels,
    slugify,
)
from utils.gateway import competition_spec
from utils.kaggle_setup import check_requirements, link_outputs

REQUIREMENTS = REPO / "requirements.txt"
USER = "alice"
TORCH_FAMILY = {"torch", "torchvision", "torchaudio", "triton"}


# ---------------------------------------------------------------------------------------------- fixtures


def fake_notebook_py(name: str) -> str:
    """A percent-format notebook with a parameters cell holding every name the Kaggle build sets."""
    params = ["MODEL", "DATA_DIR", "OUTPUT_DIR", "SEED", *SPECS[name].params]
    body = "\n".join(f'{p} = "local-{p.lower()}"  # the “{p}” knob' for p in params)
    return (f"# %% [markdown]\n# # {name}\n\n# %% tags=[\"parameters\"]\n{body}\n\n"
            f"# %%\nprint(OUTPUT_DIR)\n")  # fmt: skip


@pytest.fixture(scope="module")
def wheel_cache(tmp_path_factory) -> Path:
    """Fake wheels for every pin, as `pip download` would leave them (built with --no-wheels, they are copied)."""
    cache = tmp_path_factory.mktemp("wheel_cache")
    for pin in select_wheels(REQUIREMENTS):
        (cache / f"{pin.name.replace('-', '_')}-{pin.version}-py3-none-any.whl").write_bytes(b"PK")
    (cache / "torch-2.13.0-cp312-cp312-manylinux_2_28_x86_64.whl").write_bytes(b"PK")  # must never be copied
    return cache


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("data")
    for rel in ["gsm8k/train.jsonl", "kaggle/aimo1/train.csv", "licenses/gsm8k-MIT.txt"]:
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_text("x\n")
    (data / "MANIFEST.md").write_text("# data\n")
    return data


@pytest.fixture(scope="module")
def notebooks_dir(tmp_path_factory) -> Path:
    """All five notebooks: 01 and 03 as .ipynb (nbformat 4.5), the rest as jupytext .py sources."""
    import jupytext

    folder = tmp_path_factory.mktemp("notebooks")
    for name in kaggle.NOTEBOOKS:
        (folder / f"{name}.py").write_text(fake_notebook_py(name))
        if name in ("01_data_prep", "03_adapter_comparison"):
            nb = jupytext.read(folder / f"{name}.py")
            nb.cells[-1].outputs = [nbformat.v4.new_output("stream", text="local output\n")]
            nbformat.write(nb, folder / f"{name}.ipynb")
            (folder / f"{name}.py").unlink()
    return folder


def options(out: Path, notebooks_dir: Path, wheel_cache: Path, **kw) -> BuildOptions:
    return BuildOptions(out=out, user=USER, wheels=False, root=REPO, notebooks_dir=notebooks_dir,
                        wheel_cache=wheel_cache, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def dist(tmp_path_factory, notebooks_dir, wheel_cache, fake_data) -> Path:
    out = tmp_path_factory.mktemp("build") / "kaggle"
    build(options(out, notebooks_dir, wheel_cache, data_dir=fake_data))
    return out


def kernels(dist: Path) -> dict[str, dict]:
    manifest = json.loads((dist / "manifest.json").read_text())
    return {k["notebook"]: json.loads((dist / k["folder"] / "kernel-metadata.json").read_text())
            for k in manifest["kernels"]}  # fmt: skip


def notebook(dist: Path, name: str) -> dict:
    return json.loads((dist / name / f"{name}.ipynb").read_text())


def parameters(nb: dict) -> dict:
    (cell,) = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    scope: dict = {}
    exec(compile("".join(cell["source"]), "<parameters>", "exec"), scope)
    return scope


# ---------------------------------------------------------------------------------------------- metadata


def test_kernel_metadata_sets_every_field_with_the_right_type(dist):
    found = kernels(dist)
    assert list(found) == list(kaggle.NOTEBOOKS)
    types = {
        "id": str,
        "title": str,
        "code_file": str,
        "language": str,
        "kernel_type": str,
        "is_private": bool,
        "enable_gpu": bool,
        "enable_tpu": bool,
        "enable_internet": bool,
        "machine_shape": str,
        "dataset_sources": list,
        "competition_sources": list,
        "kernel_sources": list,
        "model_sources": list,
    }
    for name, meta in found.items():
        assert set(meta) == set(types), name
        for key, kind in types.items():
            assert isinstance(meta[key], kind), (name, key, meta[key])
        assert all(isinstance(s, str) for key in types if types[key] is list for s in meta[key])
        assert (meta["language"], meta["kernel_type"], meta["is_private"], meta["enable_tpu"]) == (
            "python",
            "notebook",
            True,
            False,
        )
        owner, slug = meta["id"].split("/")
        assert owner == USER and slug == slugify(meta["title"]), "Kaggle derives the slug from the title"
        assert 3 <= len(slug) <= 50 and 5 <= len(meta["title"]) <= 50
        assert meta["machine_shape"] == ("NvidiaTeslaT4" if meta["enable_gpu"] else "")
    assert found["01_data_prep"]["enable_gpu"] is False and found["02_lora_sft"]["enable_gpu"] is True


def test_submission_kernel_has_internet_off_and_the_competition_attached(dist):
    found = kernels(dist)
    sub = found["05_submission"]
    assert sub["enable_internet"] is False
    assert sub["competition_sources"] == ["ai-mathematical-olympiad-progress-prize-3"]
    assert parameters(notebook(dist, "05_submission"))["COMPETITION"] == "aimo3"
    assert all(not meta["enable_internet"] for meta in found.values())


@pytest.mark.parametrize("competition", ["aimo1", "aimo2"])
def test_the_chosen_competition_reaches_metadata_and_parameters(
    tmp_path, notebooks_dir, wheel_cache, competition
):
    out = tmp_path / "kaggle"
    build(options(out, notebooks_dir, wheel_cache, competition=competition))
    assert kernels(out)["05_submission"]["competition_sources"] == [competition_spec(competition).slug]
    assert parameters(notebook(out, "05_submission"))["COMPETITION"] == competition


def test_every_input_is_produced_by_an_earlier_step_of_the_build(dist):
    manifest = json.loads((dist / "manifest.json").read_text())
    datasets = {
        json.loads((dist / d["folder"] / "dataset-metadata.json").read_text())["id"]
        for d in manifest["datasets"]
    }
    assert datasets == {f"{USER}/aimo-peft-utils", f"{USER}/aimo-peft-wheels", f"{USER}/aimo-peft-data"}
    earlier: set[str] = set()
    for name, meta in kernels(dist).items():
        assert set(meta["dataset_sources"]) <= datasets, name
        assert {f"{USER}/aimo-peft-utils", f"{USER}/aimo-peft-wheels"} <= set(meta["dataset_sources"])
        assert set(meta["kernel_sources"]) <= earlier, f"{name} reads a kernel not pushed before it"
        assert meta["model_sources"] == [MODEL_SOURCE]
        earlier.add(meta["id"])
    flow = {(f["from"].split("/")[1], f["to"].split("/")[1]) for f in manifest["flow"]}
    assert ("aimo-peft-01-data-prep", "aimo-peft-02-lora-sft") in flow
    assert ("aimo-peft-02-lora-sft", "aimo-peft-05-submission") in flow


def test_model_source_is_a_kaggle_model_handle():
    owner, model, framework, variation, version = MODEL_SOURCE.split("/")
    assert (owner, model, variation) == ("deepseek-ai", "deepseek-math", "deepseek-math-7b-rl")
    assert framework == "pytorch" and version.isdigit()
    assert MODEL_PARAM == MODEL_SOURCE.rsplit("/", 1)[0]


@pytest.mark.parametrize("layout", ["", "models/deepseek-ai/"])
def test_the_model_parameter_finds_the_attached_model_in_both_mount_layouts(tmp_path, layout):
    from utils.paths import find_model_dir

    for variation in ("deepseek-math-7b-rl", "deepseek-math-7b-instruct"):  # the sibling must not be taken
        for number in ("1", "2"):
            folder = tmp_path / f"{layout}deepseek-math/pytorch/{variation}/{number}"
            folder.mkdir(parents=True)
            (folder / "config.json").write_text("{}")
    found = find_model_dir(MODEL_PARAM, root=tmp_path)
    assert found == (tmp_path / f"{layout}deepseek-math/pytorch/deepseek-math-7b-rl/2").resolve()


def test_dataset_metadata_and_contents(dist):
    for folder in ("package", "wheels", "data"):
        meta = json.loads((dist / folder / "dataset-metadata.json").read_text())
        assert 6 <= len(meta["title"]) <= 50 and len(meta["licenses"]) == 1 and meta["licenses"][0]["name"]
        assert 3 <= len(meta["id"].split("/")[1]) <= 50
    assert (dist / "package" / "src" / "utils" / "kaggle_setup.py").is_file()
    assert (dist / "package" / "requirements.txt").read_text() == REQUIREMENTS.read_text()
    assert not list((dist / "package").rglob("__pycache__"))
    assert (dist / "data" / "gsm8k" / "train.jsonl").is_file() and (dist / "data" / "licenses").is_dir()
    assert not (dist / "data" / "kaggle").exists(), (
        "competition files are attached from the competition, not re-uploaded"
    )


def utils_modules_imported(source: str) -> set[str]:
    """The `utils` submodules (or names) a piece of code imports: `from utils.x import`, `import utils.x`,
    `from utils import x`."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "utils":
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("utils."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("utils.")}
    return names


def test_package_ships_what_the_real_kernels_import_and_not_the_build_tooling(tmp_path, wheel_cache):
    dist = tmp_path / "kaggle"
    build(BuildOptions(out=dist, user=USER, wheels=False, root=REPO, wheel_cache=wheel_cache))
    shipped = dist / "package" / "src" / "utils"
    modules = {p.stem for p in shipped.glob("*.py")}
    assert modules == {p.stem for p in (REPO / "src" / "utils").glob("*.py")}, "the whole package ships"
    assert "kaggle" not in modules and not (dist / "package" / "tools").exists(), (
        "the build and push tooling (tools/kaggle.py) stays on the developer's machine"
    )
    for name in kaggle.NOTEBOOKS:
        code = "\n".join(
            "".join(c["source"]) for c in notebook(dist, name)["cells"] if c["cell_type"] == "code"
        )
        code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
        imported = utils_modules_imported(code)
        assert imported, name
        assert imported <= modules, f"{name} imports {sorted(imported - modules)}, which does not ship"
    assert "kaggle_setup" in utils_modules_imported(
        "".join(notebook(dist, "01_data_prep")["cells"][0]["source"])
    )
    experiments = dist / "package" / "experiments" / "03_adapter_comparison"
    shipped_configs = {p.relative_to(experiments) for p in experiments.rglob("*.json")}
    source = REPO / "experiments" / "03_adapter_comparison"
    assert shipped_configs and shipped_configs == {p.relative_to(source) for p in source.rglob("*.json")}, (
        "notebook 03 reads its experiment folders from the package dataset on Kaggle"
    )


def test_wheels_folder_holds_the_pinned_wheels_and_never_torch(dist):
    wheels = sorted(p.name for p in (dist / "wheels").glob("*.whl"))
    pins = (dist / "wheels" / "requirements.txt").read_text().split()
    assert len(wheels) == len(pins) and not any(w.startswith("torch") for w in wheels)


# ---------------------------------------------------------------------------------------------- notebooks


def test_code_file_exists_and_is_a_valid_notebook_without_local_outputs(dist):
    for name, meta in kernels(dist).items():
        path = dist / name / meta["code_file"]
        assert path.is_file(), path
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert all(c.get("outputs", []) == [] for c in nb.cells), "local (tiny-model) outputs must not ship"


def test_parameters_cell_parses_and_points_at_kaggle(dist):
    for name in kaggle.NOTEBOOKS:
        values = parameters(notebook(dist, name))
        assert values["OUTPUT_DIR"] == "/kaggle/working"
        assert values["MODEL"] == MODEL_PARAM and values["DATA_DIR"] == "aimo-peft-data"
        assert values["SEED"] == "local-seed", "parameters the build does not set keep their local value"
    p02 = parameters(notebook(dist, "02_lora_sft"))
    assert p02["QUANTIZATION"] == "4bit" and p02["TRAIN_SOURCES"] == "all" and p02["LEARNING_RATE"] == 2e-4


def test_no_data_dir_means_embedded_data_and_no_data_dataset(tmp_path, notebooks_dir, wheel_cache):
    out = tmp_path / "kaggle"
    build(options(out, notebooks_dir, wheel_cache))
    assert not (out / "data").exists()
    assert parameters(notebook(out, "01_data_prep"))["DATA_DIR"] == ""
    assert all(f"{USER}/aimo-peft-data" not in m["dataset_sources"] for m in kernels(out).values())


def test_rewrite_parameters_keeps_comments_and_handles_multiline_values():
    source = 'A = 1  # “first”\nB = [\n    1,\n    2,\n]  # list\nC = "x"\n'
    out = rewrite_parameters(source, {"B": "all", "C": 3}, "nb")
    assert out == 'A = 1  # “first”\nB = "all"  # list\nC = 3\n'
    ast.parse(out)


def test_rewrite_parameters_names_the_notebook_and_the_missing_parameter():
    with pytest.raises(KaggleError, match=r"02\.ipynb: the parameters cell does not set QUANTIZATION"):
        rewrite_parameters("MODEL = 'tiny'\n", {"QUANTIZATION": "4bit"}, "02.ipynb")
    with pytest.raises(KaggleError, match=r"02\.ipynb: parameters cell line 1"):
        rewrite_parameters("MODEL = = 1\n", {"MODEL": "x"}, "02.ipynb")


def test_install_cell_comes_first_and_never_installs_torch(dist):
    for name in kaggle.NOTEBOOKS:
        first = notebook(dist, name)["cells"][0]
        source = "".join(first["source"])
        tree = ast.parse(source)
        (wheels,) = [ast.literal_eval(n.value) for n in tree.body
                     if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "WHEELS"]  # fmt: skip
        names = {canonicalize_name(Requirement(w).name) for w in wheels}
        assert not names & TORCH_FAMILY
        assert {"peft", "trl", "bitsandbytes", "math-verify", "antlr4-python3-runtime"} <= names
        assert all(str(Requirement(w).specifier).startswith("==") for w in wheels), "pins only"
        for flag in ('"--no-index"', '"--no-deps"', '"--find-links"', '"aimo-peft-wheels"'):
            assert flag in source
        assert "torch" not in source.replace("Kaggle's own CUDA torch", "")


def test_setup_cell_links_what_each_notebook_reads(dist):
    for name, meta in kernels(dist).items():
        source = "".join(notebook(dist, name)["cells"][0]["source"])
        call = source.rsplit("link_outputs(", 1)[1].rsplit(")", 1)[0]
        needs = json.loads(call)
        assert set(needs) == set(SPECS[name].needs)
        assert {f"{USER}/{slug}" for slug in needs.values()} == set(meta["kernel_sources"])


def test_real_notebooks_build(tmp_path, wheel_cache):
    """Whatever notebooks exist in the repository take the Kaggle parameters (a renamed one fails here)."""
    out = tmp_path / "kaggle"
    manifest = build(BuildOptions(out=out, user=USER, wheels=False, root=REPO, wheel_cache=wheel_cache))
    existing = [
        n
        for n in kaggle.NOTEBOOKS
        if any((REPO / "notebooks" / f"{n}{s}").exists() for s in (".py", ".ipynb"))
    ]
    assert [k["notebook"] for k in manifest["kernels"]] == existing
    for name in existing:
        assert parameters(notebook(out, name))["OUTPUT_DIR"] == "/kaggle/working"


# ---------------------------------------------------------------------------------------------- wheels


def test_shipped_wheels_cover_every_dependency_kaggle_does_not_provide():
    pins = select_wheels(REQUIREMENTS)
    shipped = {p.name for p in pins}
    env = {"python_version": "3.12", "sys_platform": "linux", "platform_machine": "x86_64", "extra": ""}
    from importlib.metadata import distribution

    for pin in pins:
        for text in distribution(pin.name).requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate(env):
                name = canonicalize_name(req.name)
                assert name in shipped or name in KAGGLE_PROVIDED, (
                    f"{pin.name} needs {name}, neither shipped nor provided"
                )
    assert not shipped & TORCH_FAMILY
    pinned = read_pins(REQUIREMENTS)
    for root in ("peft", "trl", "bitsandbytes", "math-verify", "transformers"):
        assert Pin(root, pinned[root][0]) in pins
    assert Pin("antlr4-python3-runtime", "4.13.2") in pins, (
        "math-verify's [antlr4_13_2] extra must be followed"
    )


def test_torch_is_never_shipped_even_when_asked():
    assert "torch" not in {p.name for p in select_wheels(REQUIREMENTS, also=["torch"])}
    assert Pin("click", version("click")) in select_wheels(REQUIREMENTS, also=["Click"]), (
        "--also beats provided"
    )
    bare = {p.name for p in select_wheels(REQUIREMENTS, roots=["bitsandbytes"], provided=[])}
    assert "numpy" in bare and not bare & TORCH_FAMILY, (
        "torch is skipped even when nothing counts as provided"
    )
    with pytest.raises(KaggleError, match="torch"):
        pip_download_commands([Pin("torch", "2.13.0")], "/tmp/x")


def test_unpinned_requirement_is_an_error_naming_file_and_line(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("# comment\npeft==0.21.2\ntrl>=1.0\n")
    with pytest.raises(KaggleError, match=r"requirements\.txt:3: trl must be pinned with =="):
        read_pins(req)


def test_download_runs_pip_once_per_kaggle_python_with_binary_only_no_deps(tmp_path):
    pins = [Pin("peft", "0.21.2"), Pin("xxhash", "4.1.0")]
    calls = []

    def runner(cmd):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("--dest") + 1])
        tag = cmd[cmd.index("--python-version") + 1].replace(".", "")
        (dest / "peft-0.21.2-py3-none-any.whl").write_bytes(b"PK")
        (dest / f"xxhash-4.1.0-cp{tag}-cp{tag}-manylinux_2_17_x86_64.whl").write_bytes(b"PK")
        return subprocess.CompletedProcess(cmd, 0)

    dest = tmp_path / "wheels"
    dest.mkdir()
    copied = download_wheels(pins, tmp_path / "cache", dest, runner=runner)
    assert [c[c.index("--python-version") + 1] for c in calls] == ["3.11", "3.12"]
    for cmd in calls:
        assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
        assert (
            "--only-binary=:all:" in cmd
            and "--no-deps" in cmd
            and cmd[-2:] == ["peft==0.21.2", "xxhash==4.1.0"]
        )
        platforms = {cmd[i + 1] for i, a in enumerate(cmd) if a == "--platform"}
        assert {"manylinux_2_24_x86_64", "manylinux_2_35_x86_64", "manylinux2014_x86_64"} <= platforms
    assert sorted(p.name for p in copied) == sorted(p.name for p in dest.iterdir()) and len(copied) == 3


def test_download_failures_say_what_to_do(tmp_path):
    fail = lambda cmd: subprocess.CompletedProcess(cmd, 1)  # noqa: E731
    with pytest.raises(KaggleError, match="--no-wheels"):
        download_wheels([Pin("peft", "0.21.2")], tmp_path / "c", tmp_path, runner=fail)
    nothing = lambda cmd: subprocess.CompletedProcess(cmd, 0)  # noqa: E731
    with pytest.raises(KaggleError, match=r"no wheel downloaded for: peft==0\.21\.2"):
        download_wheels([Pin("peft", "0.21.2")], tmp_path / "c", tmp_path, runner=nothing)


def test_check_requirements_reports_missing_and_too_old_dependencies(tmp_path, monkeypatch):
    info = tmp_path / "fakepkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.0\n"
                                   "Requires-Dist: packaging>=9999\nRequires-Dist: surely-not-installed-pkg\n"
                                   'Requires-Dist: also-not-installed; extra == "docs"\n')  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    problems = check_requirements(["fakepkg==2.0"])
    assert problems[0] == "fakepkg 1.0 is installed, not ==2.0"
    assert any(p.startswith("fakepkg needs packaging>=9999; ") for p in problems)
    assert "fakepkg needs surely-not-installed-pkg, which is not installed" in problems
    assert len(problems) == 3, "requirements of extras not asked for are ignored"
    assert check_requirements(["nonexistent-pkg==1"]) == ["nonexistent-pkg is not installed"]
    assert check_requirements([f"peft=={read_pins(REQUIREMENTS)['peft'][0]}"]) == []


# ---------------------------------------------------------------------------------------------- build


def test_rebuild_starts_clean_and_a_failed_build_keeps_the_last_good_one(
    tmp_path, notebooks_dir, wheel_cache
):
    out = tmp_path / "kaggle"
    build(options(out, notebooks_dir, wheel_cache))
    (out / "stale.txt").write_text("old")
    build(options(out, notebooks_dir, wheel_cache))
    assert not (out / "stale.txt").exists()
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "01_data_prep.py").write_text('# %% tags=["parameters"]\nSEED = 0\n')
    with pytest.raises(KaggleError, match="does not set MODEL"):
        build(options(out, bad, wheel_cache))
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "kaggle"], (
        "no temporary folder is left behind"
    )


def test_a_notebook_whose_input_notebook_is_missing_is_an_error(tmp_path, wheel_cache):
    folder = tmp_path / "nbs"
    folder.mkdir()
    (folder / "02_lora_sft.py").write_text(fake_notebook_py("02_lora_sft"))
    with pytest.raises(KaggleError, match="reads the output of 01_data_prep"):
        build(options(tmp_path / "out", folder, wheel_cache))


@pytest.mark.realdata
def test_data_dataset_from_the_real_data_folder(tmp_path, notebooks_dir, wheel_cache, data_dir):
    from utils.data import DATASETS

    out = tmp_path / "kaggle"
    manifest = build(options(out, notebooks_dir, wheel_cache, data_dir=data_dir))
    (data,) = [d for d in manifest["datasets"] if d["folder"] == "data"]
    expected = sorted(d.path for d in DATASETS.values() if not d.path.startswith("kaggle/"))
    assert data["files"] == expected
    assert (out / "data" / "gsm8k" / "train.jsonl").read_bytes() == (
        data_dir / "gsm8k" / "train.jsonl"
    ).read_bytes()


# ---------------------------------------------------------------------------------------------- on Kaggle


def test_link_outputs_finds_earlier_outputs_in_both_mount_layouts(tmp_path):
    inputs, working = tmp_path / "input", tmp_path / "working"
    (inputs / "aimo-peft-01-data-prep" / "01_data_prep").mkdir(parents=True)
    (inputs / "notebooks" / USER / "aimo-peft-02-lora-sft" / "02_lora_sft" / "adapter").mkdir(parents=True)
    needs = {"01_data_prep": "aimo-peft-01-data-prep", "02_lora_sft": "aimo-peft-02-lora-sft"}
    linked = link_outputs(needs, inputs, working)
    assert (working / "02_lora_sft" / "adapter").is_dir() and (working / "01_data_prep").is_symlink()
    assert linked["01_data_prep"] == (inputs / "aimo-peft-01-data-prep" / "01_data_prep").resolve()
    link_outputs(needs, inputs, working)  # a rerun in the same session relinks
    with pytest.raises(FileNotFoundError, match="aimo-peft-03-adapter-comparison"):
        link_outputs({"03_adapter_comparison": "aimo-peft-03-adapter-comparison"}, inputs, working)


# ---------------------------------------------------------------------------------------------- push


def test_dry_run_prints_the_commands_in_order(dist):
    lines: list[str] = []
    push(dist, dry_run=True, out=lines.append)
    commands = [line for line in lines if not line.startswith("#")]
    expected = []
    for folder in ("package", "wheels", "data"):
        expected += [
            f"kaggle datasets version -p {dist / folder} -m 'make kaggle-push' --dir-mode zip",
            f"kaggle datasets create -p {dist / folder} --dir-mode zip",
        ]
    expected += [f"kaggle kernels push -p {dist / name}" for name in kaggle.NOTEBOOKS]
    assert commands == expected
    waits = [line for line in lines if line.startswith("# wait")]
    assert [w.split("`")[1].split()[-1] for w in waits] == [
        f"{USER}/aimo-peft-01-data-prep",
        f"{USER}/aimo-peft-02-lora-sft",
    ]


def test_dry_run_through_the_cli_with_only(dist, capsys):
    assert kaggle.main(["push", "--dist", str(dist), "--dry-run", "--only", "05_submission"]) == 0
    assert capsys.readouterr().out.strip() == f"kaggle kernels push -p {dist / '05_submission'}"


def test_missing_kaggle_cli_is_a_clear_error(dist, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KaggleError, match=r"kaggle CLI is not installed.*pip install kaggle"):
        push(dist)
    assert kaggle.main(["push", "--dist", str(dist)]) == 2
    assert "error: the kaggle CLI is not installed" in capsys.readouterr().err


def fake_cli(tmp_path, monkeypatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kaggle").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "kaggle").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)


def test_missing_credentials_is_a_clear_error(dist, tmp_path, monkeypatch):
    fake_cli(tmp_path, monkeypatch)
    with pytest.raises(
        KaggleError, match=r"no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY.*kaggle\.json"
    ):
        push(dist)


def test_push_creates_new_datasets_versions_existing_ones_and_waits_for_kernels(dist, tmp_path, monkeypatch):
    fake_cli(tmp_path, monkeypatch)
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", "k")
    calls, created = [], set()

    def runner(cmd, **kw):
        calls.append(cmd)
        if cmd[1:3] == ["datasets", "create"]:
            created.add(Path(cmd[4]).name)
        if cmd[1:3] == ["datasets", "status"]:  # only the package is new
            exists = not cmd[3].endswith("aimo-peft-utils") or "package" in created
            return subprocess.CompletedProcess(cmd, 0 if exists else 1, "ready" if exists else "404")
        if cmd[1:3] == ["kernels", "status"]:
            return subprocess.CompletedProcess(cmd, 0, f'{cmd[3]} has status "complete"')
        return subprocess.CompletedProcess(cmd, 0, "")

    push(dist, runner=runner, out=lambda s: None, poll_s=0)
    actions = [
        " ".join(c[1:3]) + (" " + Path(c[c.index("-p") + 1]).name if "-p" in c else " " + c[3]) for c in calls
    ]
    assert actions[:3] == [
        "datasets status alice/aimo-peft-utils",
        "datasets create package",
        "datasets status alice/aimo-peft-utils",
    ]
    assert "datasets version wheels" in actions and "datasets version data" in actions
    kernel_actions = [a for a in actions if a.startswith("kernels")]
    assert kernel_actions == [
        "kernels push 01_data_prep",
        "kernels status alice/aimo-peft-01-data-prep",
        "kernels push 02_lora_sft",
        "kernels status alice/aimo-peft-02-lora-sft",
        "kernels push 03_adapter_comparison",
        "kernels push 04_quantized_inference",
        "kernels push 05_submission",
        "kernels push 06_grpo",
    ]


def test_push_stops_when_a_kernel_run_fails(dist, tmp_path, monkeypatch):
    fake_cli(tmp_path, monkeypatch)
    monkeypatch.setenv("KAGGLE_API_TOKEN", "t")

    def runner(cmd, **kw):
        out = 'status "error"' if cmd[1:3] == ["kernels", "status"] else "ready"
        return subprocess.CompletedProcess(cmd, 0, out)

    with pytest.raises(KaggleError, match=r"kaggle kernels status alice/aimo-peft-01-data-prep"):
        push(dist, runner=runner, out=lambda s: None, poll_s=0, only=["01_data_prep", "02_lora_sft"])


def test_push_refuses_a_build_for_the_placeholder_user(tmp_path, notebooks_dir, wheel_cache):
    out = tmp_path / "kaggle"
    opts = options(out, notebooks_dir, wheel_cache)
    opts.user = kaggle.PLACEHOLDER_USER
    build(opts)
    with pytest.raises(KaggleError, match="placeholder user"):
        push(out, dry_run=True, out=lambda s: None)


def test_a_build_without_wheels_skips_the_wheels_dataset(tmp_path, notebooks_dir):
    out = tmp_path / "kaggle"
    build(options(out, notebooks_dir, tmp_path / "empty_cache"))
    lines: list[str] = []
    push(out, dry_run=True, out=lines.append)
    assert (
        f"# skipped {USER}/aimo-peft-wheels: no wheels in {out / 'wheels'} (built with --no-wheels)" in lines
    )
    assert not any("-p " + str(out / "wheels") in line for line in lines)


def test_push_without_a_build_says_to_build_first(tmp_path):
    with pytest.raises(KaggleError, match="run `make kaggle` first"):
        push(tmp_path, dry_run=True)


def test_default_user_reads_the_environment_then_kaggle_json(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KAGGLE_CONFIG_DIR", raising=False)
    monkeypatch.setenv("KAGGLE_USERNAME", "carol")
    assert kaggle.default_user() == "carol"
    monkeypatch.delenv("KAGGLE_USERNAME")
    assert kaggle.default_user() == kaggle.PLACEHOLDER_USER
    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "dave", "key": "k"}))
    assert kaggle.default_user() == "dave"


def test_kaggle_setup_imports_only_the_standard_library_at_top_level():
    """On Kaggle the setup cell imports it first, before anything else of the package."""
    code = "import sys, utils.kaggle_setup; print(sorted(m for m in ('packaging', 'jupytext', 'polars', 'torch') if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


def test_a_recipe_writes_its_values_into_the_kernels_parameters_cells(tmp_path, wheel_cache):
    from utils.recipes import load_recipe

    out = tmp_path / "kaggle"
    build(options(out, REPO / "notebooks", wheel_cache, recipe="deepseek-math-7b-2xt4"))
    recipe = load_recipe("deepseek-math-7b-2xt4")
    for name, values in recipe.params.items():
        assert {k: parameters(notebook(out, name))[k] for k in values} == values, name
    assert parameters(notebook(out, "02_lora_sft"))["OUTPUT_DIR"] == "/kaggle/working"


def test_an_unknown_recipe_stops_the_build_in_one_line(capsys):
    assert kaggle.main(["build", "--out", "/tmp/never", "--no-wheels", "--recipe", "no-such-recipe"]) == 2
    assert "no recipe 'no-such-recipe'" in capsys.readouterr().err
