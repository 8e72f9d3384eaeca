"""Face models by name: a data directory keeps its model, and moves to another with reembed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import facetrail
from conftest import FACES, PEOPLE, WARCS, cli_json, kill_a_worker, run_cli
from facetrail.errors import ConfigError, PolicyError
from facetrail.store import Store, open_store
from stores import build_schema, copy_rows, own_store, store_env, store_url_of

IDENTITIES = ("Barack_Obama", "Angelina_Jolie", "Kit_Harington", "Rose_Leslie", "Ashanti",
              "Jesse_Jackson", "Oprah_Winfrey")
CASE = ("--case", "T-1", "--purpose", "testing")


def _photos(root: Path) -> Path:
    """A copy of some fixture photos (so that tests may remove one), without each identity's
    first photo (the probes)."""
    for who in IDENTITIES:
        shutil.copytree(PEOPLE / who, root / who)
        _probe(who, root).unlink()
    shutil.copy(FACES / "group" / "kit_with_rose.jpg", root / "kit_with_rose.jpg")
    return root


def _probe(who: str, root: Path = PEOPLE) -> Path:
    return root / who / sorted(os.listdir(PEOPLE / who))[0]


def _dlib_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    photos = _photos(tmp_path / "photos")
    env = {"FACETRAIL_FACE_MODEL": "dlib"}
    run_cli(home, "sources", "add", "photos", "--kind", "folder", "--uri", str(photos),
            "--lawful-basis", "test fixtures", "--purpose", "testing", "--retention-days", "30",
            env_extra=env)
    run_cli(home, "ingest", "photos")
    archive = photos / "flashfrozen-jwat-recompressed.warc.gz"  # inside the source's folder
    shutil.copy(WARCS / archive.name, archive)
    run_cli(home, "ingest", str(archive), "--source", "photos")
    return home


def _top_identity(home: Path, probe: Path) -> str:
    out = cli_json(home, "search", str(probe), *CASE, "--top", "1")
    assert isinstance(out, dict)
    return Path(out["candidates"][0]["appearances"][0]["location"]).parent.name


def test_a_new_home_uses_yunet_sface_and_keeps_it(tmp_path: Path) -> None:
    with facetrail.open(tmp_path) as ft:
        assert ft.model_name == "yunet-sface" and ft.model.metric == "cosine"
        assert ft.model.key.startswith("yunet@8f2383e4dd3cfbb4+sface@")
    with pytest.raises(ConfigError, match="uses the face model 'yunet-sface', not 'dlib'"):
        facetrail.open(tmp_path, face_model="dlib")
    other = tmp_path / "other"
    own_store(other)
    with pytest.raises(ConfigError, match="unknown face model 'arcface'"):
        facetrail.open(other, face_model="arcface", store_url=store_url_of(other))


def test_a_home_made_before_models_had_names_keeps_dlib(tmp_path: Path) -> None:
    """A schema-4 home (model keys without the detector, no recorded model) opens on dlib,
    with its gallery and without re-ingesting."""
    made = tmp_path / "made"
    with facetrail.open(made, face_model="dlib", store_url=store_url_of(made)) as ft:
        ft.add_source("p", "folder", PEOPLE / "Barack_Obama", lawful_basis="test",
                      purpose="testing", retention_days=1)
        ft.ingest("p")
        faces = ft.index.size
    # The same gallery in a store made by a schema-4 facetrail: its scripts, its columns,
    # and model keys that do not name the detector.
    home = tmp_path / "home"
    shutil.copytree(made / "index", home / "index")
    url = own_store(home).get("FACETRAIL_STORE_URL", f"sqlite:///{home / 'facetrail.db'}")
    build_schema(url, 4)

    def v4_model(row: tuple[Any, ...]) -> tuple[Any, ...]:
        info = json.loads(row[2])
        del info["detector"]
        return (row[0], row[1].split("+", 1)[1], json.dumps(info), row[3])

    source = store_url_of(made)
    copy_rows(source, url, "models", "id, key, info, created_at", v4_model)
    copy_rows(source, url, "sources", "id, name, kind, uri, lawful_basis, purpose,"
              " retention_days, created_at, created_by")
    copy_rows(source, url, "ingest_runs", "id, source_id, paths, started_at, finished_at,"
              " status, os_user, pid, items, images_new, duplicates, skipped, faces, errors")
    copy_rows(source, url, "images", "id, sha256, model_id, width, height, format, bytes,"
              " face_count, created_at")
    copy_rows(source, url, "faces", "id, image_id, model_id, detector, ordinal, x, y, w, h,"
              " landmarks, det_score, quality, sharpness, embedding, runtime")
    copy_rows(source, url, "appearances", "id, image_id, source_id, location, fingerprint,"
              " source_url, page_urls, captured_at, title, record_id, run_id, created_at")
    with facetrail.open(home, store_url=url) as ft:
        assert ft.model_name == "dlib" and ft.index.size == faces
        assert ft.model.key.startswith("dlib-hog@frontal-v1+dlib_face_recognition_resnet")
        report = ft.ingest("p")
        assert report.images_new == 0 and report.skipped == report.items
        result = ft.search(PEOPLE / "Barack_Obama" / "Barack_Obama_0002.jpg", case_ref="T",
                           purpose="testing")
        assert result.candidates[0].score == 1.0 and result.metric == "l2"


def test_reembed_moves_a_gallery_resumably_and_reports_what_it_cannot_read(
    tmp_path: Path,
) -> None:
    home = _dlib_home(tmp_path)
    probes = [_probe(who) for who in ("Barack_Obama", "Angelina_Jolie", "Jesse_Jackson",
                                      "Oprah_Winfrey", "Ashanti")]
    before = {p: _top_identity(home, p) for p in probes}
    assert before == {p: p.parent.name for p in probes}
    images = cli_json(home, "stats")["images"]  # type: ignore[index]
    missing = tmp_path / "photos" / "Ashanti" / "Ashanti_0002.jpg"
    missing.unlink()

    # Kill a move part-way (as a user's Ctrl-C or an OOM kill would), then resume it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
    env.update(store_env(home))
    proc = subprocess.Popen(
        [sys.executable, "-m", "facetrail", "--home", str(home), "reembed", "--model",
         "yunet-sface"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    store = open_store(store_url_of(home))
    try:
        deadline = time.monotonic() + 300
        moved = 0
        while time.monotonic() < deadline and proc.poll() is None:
            moved = _moved(store)
            if moved >= 5:
                break
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert moved >= 5

        out = cli_json(home, "reembed", "--model", "yunet-sface")
        assert isinstance(out, dict)
        assert out["images"] == images and out["already"] >= 5
        assert out["already"] + out["moved"] == images - 1
        assert [len(out["unreadable"]), out["failed"], out["complete"]] == [1, [], False]
        assert _moved(store) == images - 1  # no image twice
    finally:
        store.close()

    # Not moved completely: refused without --force, and searches stay on dlib meanwhile.
    refused = run_cli(home, "models", "use", "yunet-sface", check=False)
    assert refused.returncode == 2 and "1 of the" in refused.stderr
    assert cli_json(home, "stats")["face_model"] == "dlib"  # type: ignore[index]
    run_cli(home, "models", "use", "yunet-sface", "--force")
    stats = cli_json(home, "stats")
    assert isinstance(stats, dict)
    assert stats["face_model"] == "yunet-sface" and stats["metric"] == "cosine"
    assert stats["images"] == images - 1  # counts are the model's in use, not both models
    assert stats["index_faces"] > 0
    assert {p: _top_identity(home, p) for p in probes} == before

    listed = {m["name"]: m for m in cli_json(home, "models", "list")}  # type: ignore[union-attr]
    assert listed["yunet-sface"]["active"] and listed["yunet-sface"]["images"] == images - 1
    assert listed["dlib"]["images"] == images
    actions = [e["action"] for e in map(json.loads, run_cli(
        home, "audit", "export").stdout.splitlines())]
    assert actions.count("model.reembed") == 1 and actions.count("model.use") == 1
    assert run_cli(home, "audit", "verify").returncode == 0


def _moved(store: Store) -> int:
    """Images stored for the YuNet + SFace model so far."""
    return sum(store.image_count(model_id) for model_id, key, _ in store.models()
               if key.startswith("yunet@"))


def test_a_move_to_the_same_model_or_an_unknown_one_is_refused(tmp_path: Path) -> None:
    with facetrail.open(tmp_path) as ft:
        with pytest.raises(PolicyError, match="already uses"):
            ft.reembed("yunet-sface")
        with pytest.raises(ConfigError, match="unknown face model"):
            ft.reembed("facenet")


def test_a_worker_killed_during_a_move_costs_nothing(tmp_path: Path) -> None:
    """The images a dead worker held are redone one at a time; none is lost or reported."""
    home, photos = tmp_path / "home", tmp_path / "photos"
    for person in sorted(PEOPLE.iterdir())[:30]:
        shutil.copytree(person, photos / person.name)
    run_cli(home, "sources", "add", "p", "--kind", "folder", "--uri", str(photos),
            "--lawful-basis", "test fixtures", "--purpose", "testing", "--retention-days", "30",
            env_extra={"FACETRAIL_FACE_MODEL": "dlib"})
    run_cli(home, "ingest", "p")
    images = cli_json(home, "stats")["images"]  # type: ignore[index]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
    env.update(store_env(home))
    proc = subprocess.Popen(
        [sys.executable, "-m", "facetrail", "--home", str(home), "--workers", "2", "reembed",
         "--model", "yunet-sface", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    store = open_store(store_url_of(home))
    try:
        killed = kill_a_worker(proc, lambda: _moved(store) >= 3)
        out, err = proc.communicate(timeout=300)
        assert killed, "no worker could be killed"
        assert proc.returncode == 0, err
        report = json.loads(out)
        assert report["failed"] == [] and report["unreadable"] == [] and report["complete"]
        assert report["moved"] == images == _moved(store)
    finally:
        store.close()

