"""The wheel ``pip install .`` builds: its metadata (name, version, runtime dependencies that the
pinned stack satisfies) and a fresh venv in which the four packages import from the wheel."""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from email.parser import Parser
from importlib import metadata

import pytest

import backbones

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ('backbones', 'classification', 'detection', 'face')


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    """The wheel, built offline from a copy of the sources (nothing is written into the tree)."""
    src = tmp_path_factory.mktemp('src')
    for name in ('pyproject.toml', 'README.md'):
        shutil.copy(os.path.join(ROOT, name), src / name)
    for package in PACKAGES:
        shutil.copytree(os.path.join(ROOT, package), src / package, ignore=shutil.ignore_patterns('__pycache__'))
    out = tmp_path_factory.mktemp('dist')
    proc = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--no-index',
                           '-w', str(out), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels = glob.glob(str(out / '*.whl'))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _metadata(wheel):
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith('.dist-info/METADATA'))
        return Parser().parsestr(archive.read(name).decode()), archive.namelist()


def test_wheel_metadata_and_contents(wheel):
    from packaging.requirements import Requirement
    meta, files = _metadata(wheel)
    assert meta['Name'] == 'toponet-suite' and meta['Version'] == backbones.__version__
    requirements = [Requirement(r) for r in meta.get_all('Requires-Dist')]
    runtime = {r.name.lower(): r for r in requirements if not r.marker}
    # every third-party package the four packages import is declared
    assert {'torch', 'torchvision', 'timm', 'mmengine', 'mmcv', 'mmdet', 'setuptools', 'safetensors', 'numpy',
            'scipy', 'networkx', 'matplotlib', 'pillow', 'opencv-python', 'pycocotools', 'tqdm', 'insightface', 'onnx',
            'onnxruntime', 'onnxscript'} <= set(runtime)
    # ... and the stack this suite is tested on (requirements.txt) satisfies each range
    unmet = {name: (str(r.specifier), metadata.version(name)) for name, r in runtime.items()
             if not r.specifier.contains(metadata.version(name), prereleases=True)}
    assert not unmet, unmet
    assert 'pytest' in {r.name for r in requirements if r.marker and 'test' in str(r.marker)}
    for package in PACKAGES:
        assert f'{package}/__init__.py' in files
    assert 'backbones/export.py' in files and not any(f.startswith('tests/') for f in files)


def test_fresh_venv_imports_the_installed_packages(wheel, tmp_path):
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True, timeout=300)
    python = str(venv / 'bin' / 'python')
    proc = subprocess.run([python, '-m', 'pip', 'install', '-q', '--no-deps', '--no-index', wheel],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the dependencies (torch, mmcv...) come from this environment, as if pip had resolved them
    site = subprocess.run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, 'toponet_deps.pth'), 'w') as f:
        f.write(sysconfig.get_paths()['purelib'] + '\n')
    code = ('import importlib.metadata as md, backbones, classification, detection, face, timm; '
            'print(backbones.__version__, md.version("toponet-suite")); '
            'print(*[m.__file__ for m in (backbones, classification, detection, face)], sep="\\n"); '
            'print(timm.create_model("toponet_fmnist_complete").num_classes)')
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}
    proc = subprocess.run([python, '-c', code], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == f'{backbones.__version__} {backbones.__version__}'
    assert all(path.startswith(site) for path in lines[1:5]), lines  # from the wheel, not from the source tree
    assert lines[5] == '10'
