"""ModelUpdateManager against a signed catalog served over HTTP on loopback by the test.

The installation runs `personality/luna` 1.0.0 (the tiny model); a publisher signs a catalog with
2.0.0. A good update applies; a tampered file, a bad signature, an untrusted key, an expired
catalog, an older catalog, a failing smoke test and a download cut halfway are each refused or
rolled back with a clear reason, and luna still loads at 1.0.0.
"""

from __future__ import annotations

import base64
import json
import shutil
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from models.catalog import canonical_bytes, generate_key, load_private_key, sign_catalog
from models.errors import CatalogError
from models.model_manager import ModelManager
from models.update_config import UpdatesConfig
from models.update_manager import ModelUpdateManager
from models.version_control import ModelVersionControl
from tests.conftest import build_tiny_model
from tests.lifecycle.support import LUNA_CONFIG, Publisher, edit_model


@pytest.fixture(scope="module")
def new_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Luna 2.0.0: another tiny model (different weights)."""
    return build_tiny_model(tmp_path_factory.mktemp("v2") / "luna-v2", seed=7, manifest=False)


@pytest.fixture
def installed(luna, user_config) -> ModelVersionControl:
    vc = ModelVersionControl(actor="ops")
    vc.create_version("luna", "shipped")
    return vc


@pytest.fixture
def publisher(tmp_path: Path, new_model: Path) -> Publisher:
    pub = Publisher(tmp_path / "pub")
    assert pub.publish(new_model, notes="Luna 2: warmer replies") == "2.0.0"
    return pub


def configure(user_config, publisher: Publisher, source: str) -> None:
    user_config(LUNA_CONFIG + publisher.updates_config(source))


def still_at_1(vc: ModelVersionControl) -> None:
    assert vc.aliases("luna") == {"current": "1.0.0"}
    assert [v.version for v in vc.list_versions("luna")] == ["1.0.0"]
    model = ModelManager().load_model("personality", "luna")
    assert model.ref.version == "1.0.0" and isinstance(model.generate("Hi", max_length=3, seed=0), str)
    assert vc.verify().ok


def test_no_catalogs_configured_finds_nothing(luna) -> None:
    manager = ModelUpdateManager()
    found = manager.check_updates()
    assert found == [] and found.refused == []
    result = manager.apply_updates(updates=found, backup_existing=True)
    assert result and result.outcomes == []


def test_good_update_over_http_applies(installed, publisher, user_config, serve_folder, capsys) -> None:
    configure(user_config, publisher, serve_folder(publisher.catalog))
    manager = ModelUpdateManager(progress=True)
    found = manager.check_updates()
    assert [(u.model, u.current, u.version, u.notes) for u in found] == [
        ("personality/luna", "1.0.0", "2.0.0", "Luna 2: warmer replies")
    ]
    result = manager.apply_updates(updates=found, backup_existing=True, archive=True)
    assert result and [o.status for o in result.outcomes] == ["applied"]
    outcome = result.applied[0]
    assert outcome.previous == "1.0.0" and isinstance(outcome.reply, str)
    vc = installed
    assert vc.aliases("luna") == {"current": "2.0.0"}
    assert vc.show("luna", "1.0.0").tags == {"backup": "kept before update to 2.0.0"}
    assert vc.show("luna", "2.0.0").lineage["origin"] == "update"
    with tarfile.open(outcome.archive) as tar:
        assert any(n.endswith("model.safetensors") for n in tar.getnames())
    assert "personality/luna 2.0.0" in capsys.readouterr().err  # the download progress bar
    assert ModelManager().load_model("personality", "luna").ref.version == "2.0.0"
    history = vc.alias_history("luna")[-1]
    assert history.to_version == "2.0.0" and "catalog" in (history.reason or "")
    assert manager.check_updates() == []  # nothing newer now
    assert vc.verify().ok


def test_without_backup_the_old_version_goes(installed, publisher, user_config) -> None:
    configure(user_config, publisher, str(publisher.catalog))  # a folder catalog
    result = ModelUpdateManager().apply_updates(backup_existing=False)
    assert result and "deleted 1.0.0" in result.applied[0].reason
    assert [v.version for v in installed.list_versions("luna")] == ["2.0.0"]


def test_tampered_file_rolls_back(installed, publisher, user_config, serve_folder) -> None:
    target = next(publisher.catalog.glob("personality/luna/2.0.0/tokenizer.json"))
    data = bytearray(target.read_bytes())
    data[100] ^= 0x20
    target.write_bytes(bytes(data))
    configure(user_config, publisher, serve_folder(publisher.catalog))
    result = ModelUpdateManager().apply_updates(ModelUpdateManager().check_updates())
    assert not result and result.rolled_back[0].version == "2.0.0"
    assert "tokenizer.json" in result.rolled_back[0].reason and "sha256 differs" in result.rolled_back[0].reason
    still_at_1(installed)


def test_bad_signature_is_refused(installed, publisher, user_config, serve_folder) -> None:
    path = publisher.catalog / "catalog.json"
    doc = json.loads(path.read_text())
    doc["signed"]["models"][-1]["notes"] = "totally safe"  # changed after signing
    path.write_text(json.dumps(doc))
    configure(user_config, publisher, serve_folder(publisher.catalog))
    found = ModelUpdateManager().check_updates()
    assert found == [] and "bad signature" in found.refused[0][1]
    with pytest.raises(CatalogError, match="bad signature"):
        ModelUpdateManager().check_updates(strict=True)
    still_at_1(installed)


def test_untrusted_key_is_refused(installed, publisher, user_config, serve_folder, tmp_path) -> None:
    other = generate_key(tmp_path / "other.pem")
    user_config(
        f"models:\n  personality:\n    luna: {{type: transformer, path: '{{tiny}}'}}\n"
        f"updates:\n  catalogs: ['{serve_folder(publisher.catalog)}']\n  trusted_keys: ['{other}']\n"
    )
    found = ModelUpdateManager().check_updates()
    assert found == [] and "not signed by a trusted key" in found.refused[0][1]
    config = UpdatesConfig(catalogs=[str(publisher.catalog)])
    refused = ModelUpdateManager(config).check_updates().refused
    assert "no trusted keys configured" in refused[0][1]


def test_expired_catalog_is_refused(installed, publisher, user_config, serve_folder) -> None:
    publisher.resign(expires=(datetime.now(UTC) - timedelta(hours=1)).isoformat())
    configure(user_config, publisher, serve_folder(publisher.catalog))
    found = ModelUpdateManager().check_updates()
    assert found == [] and "expired at" in found.refused[0][1]
    still_at_1(installed)


def test_older_catalog_is_refused(installed, publisher, user_config, serve_folder) -> None:
    old = (publisher.catalog / "catalog.json").read_bytes()
    publisher.resign(catalog_version=5)
    configure(user_config, publisher, serve_folder(publisher.catalog))
    assert len(ModelUpdateManager().check_updates()) == 1  # version 5 seen and remembered
    (publisher.catalog / "catalog.json").write_bytes(old)  # a replay of the older catalog
    found = ModelUpdateManager().check_updates()
    assert found == [] and "older than version 5" in found.refused[0][1]
    publisher.resign(catalog_version=5, issued=datetime.now(UTC).isoformat())
    same_number = ModelUpdateManager().check_updates()
    assert "different content" in same_number.refused[0][1]
    still_at_1(installed)


def test_failing_smoke_test_rolls_back(installed, tmp_path, new_model, user_config, serve_folder) -> None:
    broken = shutil.copytree(new_model, tmp_path / "broken")
    edit_model(broken, hidden_size=64, intermediate_size=128)  # weights no longer fit the config
    pub = Publisher(tmp_path / "pub2")
    pub.publish(broken)
    configure(user_config, pub, serve_folder(pub.catalog))
    manager = ModelUpdateManager()
    result = manager.apply_updates(manager.check_updates())
    assert not result and "smoke test failed" in result.rolled_back[0].reason
    assert "removed the new version 2.0.0" in result.rolled_back[0].reason
    still_at_1(installed)


def test_download_cut_halfway_rolls_back(installed, publisher, user_config, serve_folder) -> None:
    url = serve_folder(publisher.catalog, cut={"personality/luna/2.0.0/model.safetensors"})
    configure(user_config, publisher, url)
    manager = ModelUpdateManager()
    result = manager.apply_updates(manager.check_updates())
    reason = result.rolled_back[0].reason
    assert not result and "model.safetensors" in reason and ("incomplete" in reason or "cut" in reason)
    assert "nothing was installed" in reason
    still_at_1(installed)


def test_a_custom_smoke_test_and_an_interrupted_apply_resume(installed, publisher, user_config) -> None:
    configure(user_config, publisher, str(publisher.catalog))

    def refuse(folder: Path) -> str:
        raise RuntimeError("out of memory")

    bad = ModelUpdateManager(smoke=refuse).apply_updates()
    assert "RuntimeError: out of memory" in bad.rolled_back[0].reason
    still_at_1(installed)
    good = ModelUpdateManager(smoke=lambda folder: "fine").apply_updates()
    assert good and good.applied[0].reply == "fine"


def test_catalog_signing_round_trip(tmp_path) -> None:
    from models.catalog import verify_catalog

    pub = generate_key(tmp_path / "k.pem")
    now = datetime.now(UTC)
    signed = {
        "format": "companion-catalog/1",
        "catalog_version": 1,
        "issued": now.isoformat(),
        "expires": (now + timedelta(days=1)).isoformat(),
        "models": [],
    }
    doc = sign_catalog(signed, load_private_key(tmp_path / "k.pem"))
    catalog, keyid, digest = verify_catalog(json.dumps(doc).encode(), [pub], "test")
    assert catalog.catalog_version == 1 and len(keyid) == 16 and len(digest) == 64
    with pytest.raises(Exception, match="refusing to overwrite"):
        generate_key(tmp_path / "k.pem")
    key = load_private_key(tmp_path / "k.pem")
    bad_file = {"path": "../../etc/passwd", "size": 1, "sha256": "0" * 64}
    evil = {**signed, "models": [{"category": "x", "name": "y", "version": "1.0.0", "files": [bad_file]}]}
    sig = base64.b64encode(key.sign(canonical_bytes(evil))).decode()
    raw = json.dumps({"signed": evil, "signatures": [{"keyid": keyid, "sig": sig}]}).encode()
    with pytest.raises(CatalogError, match="unsafe file path"):
        verify_catalog(raw, [pub], "test")


def test_public_api() -> None:
    import models.catalog
    import models.update_config
    import models.update_manager
    import models.update_publish
    import models.update_sources
    import models.version_control
    import models.version_diff
    import models.version_index
    import models.version_records

    for module in (
        models.catalog,
        models.update_config,
        models.update_manager,
        models.update_publish,
        models.update_sources,
        models.version_control,
        models.version_diff,
        models.version_index,
        models.version_records,
    ):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
