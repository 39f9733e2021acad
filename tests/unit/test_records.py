"""certbot-wazo's records: what is written is read back, 0.1.0's records still read, a damaged or
newer record is one line naming the file and what to do."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from certbot_wazo import records
from certbot_wazo.files import FileState
from certbot_wazo.records import Failure, Original, Phase, RecordError, SavedSettings, Transaction
from certbot_wazo.tls import Endpoint

WHERE = Path("/var/lib/certbot-wazo/transaction")
TRANSACTION = Transaction(
    phase=Phase.RESTARTING, hostname="wazo.example.test", generation="legacy", update_config=True,
    restarts=[["/usr/bin/wazo-service", "restart", "all"]],
    gentle=[["/bin/systemctl", "reload", "nginx"]],
    endpoints=[Endpoint("127.0.0.1", 443, "nginx"), Endpoint("::1", 9497, "wazo-auth")],
    previous_leaf=b"\x30\x01", new_leaf=b"\x30\x02", label="Deployed", verify=False,
    written={"/etc/hosts": "file:ab"})


def round_trip(data: bytes) -> object:
    return json.loads(data.decode())


def test_every_record_reads_back_as_written() -> None:
    assert Transaction.from_json(round_trip(records.dump(TRANSACTION)), WHERE) == TRANSACTION
    original = Original(saved=12.5, generation="modern")
    assert Original.from_json(round_trip(records.dump(original)), WHERE) == original
    failure = Failure(cert="/le/fullchain.pem", key="/le/privkey.pem", error="e", failed_at="t",
                      settings=SavedSettings(profile="legacy", hostname="n", force_profile=True,
                                             probes=["127.0.0.1:443"], probe_timeout=5.0))
    assert Failure.from_json(round_trip(records.dump(failure)), WHERE) == failure


def test_records_carry_their_version() -> None:
    assert json.loads(records.dump(TRANSACTION))["version"] == records.VERSION


def test_records_of_0_1_0_are_read() -> None:
    """No version, and the phase "probing" that 0.1.0 read (never wrote) is RESTARTING."""
    old = {"hostname": "h", "generation": "legacy", "update_config": False, "restarts": [],
           "gentle": [], "endpoints": [["127.0.0.1", 443, "nginx"]], "previous_leaf": "",
           "new_leaf": "3002", "label": "", "verify": True, "phase": "probing"}
    record = Transaction.from_json(old, WHERE)
    assert record.phase == Phase.RESTARTING and record.new_leaf == b"\x30\x02"
    assert Failure.from_json({"cert": "/c", "key": "/k"}, WHERE).settings == SavedSettings()


def test_a_manifest_of_0_1_0_is_read(tmp_path: Path) -> None:
    (tmp_path / "0.blob").write_bytes(b"key")
    (tmp_path / "manifest.json").write_text(json.dumps({"entries": [
        {"path": "/k", "blob": "0.blob",
         "state": {"kind": "file", "mode": 416, "uid": 0, "gid": 33, "target": ""}}],
        "meta": {"phase": "installing"}}))
    entries, meta = records.load_manifest(tmp_path / "manifest.json",
                                          lambda blob: (tmp_path / blob).read_bytes())
    assert entries == [records.Entry("/k", "0.blob", FileState.file(b"key", 0o640, 0, 33))]
    assert meta == {"phase": "installing"}


def test_a_manifest_reads_back_as_written(tmp_path: Path) -> None:
    entries = [records.Entry("/l", "0.blob", FileState.link("../x")),
               records.Entry("/a", "1.blob", FileState.absent())]
    (tmp_path / "manifest.json").write_bytes(records.dump_manifest(entries, {"k": 1}))
    assert records.load_manifest(tmp_path / "manifest.json", lambda blob: b"") == \
        (entries, {"k": 1})


@pytest.mark.parametrize("data, detail", [
    ([1, 2], "not a JSON object"),
    ({"phase": "exploding"}, "ValueError"),
    ({"endpoints": [[1]]}, "ValueError"),
    ({"endpoints": [["127.0.0.1", "443", "nginx"]]}, "port number"),
    ({"restarts": "wazo-service restart all"}, "expected a list"),
    ({"update_config": "yes"}, "true or false"),
    ({"new_leaf": "zz"}, "ValueError"),
])
def test_a_damaged_record_is_one_line_naming_it_and_the_fix(data: object, detail: str) -> None:
    with pytest.raises(RecordError) as err:
        Transaction.from_json(data, WHERE)
    message = str(err.value)
    assert message.startswith(f"{WHERE}: certbot-wazo's undo log is damaged (")
    assert detail in message and message.endswith(f"then remove {WHERE})") and "\n" not in message


@pytest.mark.parametrize("version", [records.VERSION + 1, "1", True])
def test_a_record_from_a_newer_certbot_wazo_is_refused(version: object) -> None:
    with pytest.raises(RecordError, match="upgrade certbot-wazo"):
        Failure.from_json({"version": version, "cert": "/c", "key": "/k"}, WHERE)


@pytest.mark.parametrize("settings", [{"probes": 7}, {"probe_timeout": "soon"},
                                      {"hostname": 3}, {"profile": None}])
def test_damaged_saved_settings_are_refused(settings: dict[str, object]) -> None:
    with pytest.raises(RecordError, match="remembered failed deployment is damaged"):
        Failure.from_json({"cert": "/c", "key": "/k", "settings": settings}, WHERE)


def test_a_manifest_that_is_not_json_names_its_directory(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_bytes(b"\x00\xff")
    with pytest.raises(RecordError) as err:
        records.load_manifest(tmp_path / "manifest.json", lambda blob: b"")
    assert str(err.value).startswith(f"{tmp_path / 'manifest.json'}: ")
    assert str(err.value).endswith(f"then remove {tmp_path})")  # the snapshot, not its manifest


def test_written_digests_read_both_layouts_and_refuse_damage() -> None:
    """0.1.0 kept the digests at the top level; now they are under "digests", versioned."""
    assert records.written_digests({"/a": "file:x"}, WHERE) == {"/a": "file:x"}
    current = json.loads(records.dump_written({"/a": "file:x"}))
    assert current["version"] == records.VERSION
    assert records.written_digests(current, WHERE) == {"/a": "file:x"}
    for damaged in ([1], {"version": 1, "digests": [1]}, {"/a": 3}):
        with pytest.raises(RecordError, match="record of what it wrote is damaged"):
            records.written_digests(damaged, WHERE)
    with pytest.raises(RecordError, match="upgrade certbot-wazo"):
        records.written_digests({"version": records.VERSION + 1, "digests": {}}, WHERE)


def test_the_undo_logs_damage_says_how_to_put_the_certificate_back() -> None:
    with pytest.raises(RecordError) as err:
        Transaction.from_json({"endpoints": 3}, WHERE)
    assert "put the previous certificate back by hand if needed (the saved files are in " \
        f"{WHERE}), then remove {WHERE}" in str(err.value)
