"""`pipeline verify` and the reader refuse the same shards, member by member, in the same one line (issue 32):
verify said OK for an extra hard link and for a sample stored twice that train refused, and train accepted a key
stored twice that verify flagged. Each shard here is crafted and its manifest entry updated to match it, so only
the member rules can tell."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile

import pytest

from common.errors import ShardSetError
from pipeline.shard_reader import open_shards
from pipeline.shard_verify import verify_set

from .conftest import run_cli

SHARD = "patches-000000.tar"


def _link(name: str, kind: bytes, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


def _renamed(member: tarfile.TarInfo, data: bytes, name: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


# each: the shard's members (first 128: samples 0..63, image then .json) -> the members written, and the problem
CASES = {
    "an extra hard link": (lambda m: [*m, _link("000000063.png", tarfile.LNKTYPE, "000000000.png")],
                           "{shard}:000000063.png: a hard link to '000000000.png'; a shard holds regular files only"),
    "a sample stored twice": (lambda m: [*m, *m[-2:]], "{shard}:000000063.png: a second image of sample 000000063"),
    "a key stored twice": (lambda m: [*m[:-2], _renamed(*m[0], "000000000.png"), _renamed(*m[1], "000000000.json")],
                           "{shard}:000000000.png: sample 000000063 expected here (a shard holds samples "
                           "000000000..000000063, in order, each once)"),
    "a stray member": (lambda m: [*m, _renamed(*m[1], "README.txt")],
                       "{shard}:README.txt: not a sample's .png or .json, which is all a shard holds"),
    "a sample without its .json": (lambda m: [*m[:-1]], "{shard}: sample 000000063 lacks its .png or .json"),
}


def _crafted(tiny_set, folder, members_of) -> None:
    shutil.copytree(tiny_set, folder)
    shard = folder / SHARD
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members_of(members):
            tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    manifest = json.loads((folder / "manifest.json").read_text())
    data = shard.read_bytes()
    manifest["shards"][0].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("case", CASES)
def test_verify_and_the_reader_refuse_the_same_member_in_the_same_words(tiny_set, tmp_path, case):
    members_of, problem = CASES[case]
    folder = tmp_path / "set"
    _crafted(tiny_set, folder, members_of)
    expected = problem.format(shard=folder / SHARD)
    assert verify_set(folder) == [expected]
    with pytest.raises(ShardSetError) as error:
        list(open_shards(folder.absolute(), verify=False))
    assert str(error.value) == expected
    proc = run_cli("verify", str(folder))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and expected in proc.stdout + proc.stderr


def test_an_intact_set_passes_both(tiny_set):
    assert verify_set(tiny_set) == []
    assert sorted(s["index"] for s in open_shards(tiny_set)) == list(range(256))
