"""Regenerate the committed Python stubs in services/routemesh/v1 from protos/ (run: python scripts/gen_protos.py [--check])."""

from __future__ import annotations

import argparse
import filecmp
import pathlib
import shutil
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT_ROOT = ROOT / "services"
PACKAGE_DIR = "routemesh/v1"


def generate(out_root: pathlib.Path) -> list[pathlib.Path]:
    """Run protoc (from grpcio-tools) into out_root; return the generated files."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out_root / PACKAGE_DIR).glob("*_pb2*.py*"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed stubs are stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_root = pathlib.Path(tmp)
        (tmp_root / PACKAGE_DIR).mkdir(parents=True)
        fresh = {p.name: p for p in generate(tmp_root)}
        target = OUT_ROOT / PACKAGE_DIR
        current = {p.name: p for p in target.glob("*_pb2*.py*")}
        if args.check:
            stale = sorted(
                set(fresh) ^ set(current)
                | {n for n in set(fresh) & set(current) if not filecmp.cmp(fresh[n], current[n], shallow=False)}
            )
            if stale:
                print("generated code is out of date with protos/: " + ", ".join(stale), file=sys.stderr)
                print("run: python scripts/gen_protos.py", file=sys.stderr)
                return 1
            print(f"generated code is up to date ({len(fresh)} files)")
            return 0
        for name in set(current) - set(fresh):
            current[name].unlink()
        for name, path in fresh.items():
            shutil.copyfile(path, target / name)
        print(f"wrote {len(fresh)} files to {target.relative_to(ROOT)}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
