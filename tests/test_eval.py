"""`facetrail eval`, `facetrail calibrate` and calibrated, multi-photo searches, end to end."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import FACES, PEOPLE, cli_json, run_cli
from facetrail.calibration import Calibration
from facetrail.engine import Facetrail
from facetrail.errors import InputError, NoFaceError
from facetrail.eval.runner import identity_folders, largest_faces, split_identities
from facetrail.faces import DEFAULT_FLOOR
from facetrail.faces.base import SCORE_MEANING

PNG = b"\x89PNG\r\n\x1a\n"


def _copy(home: Path, to: Path) -> Path:
    shutil.copytree(home, to)
    return to


def test_eval_verify_on_the_fixture_pairs(gallery_home: Path, tmp_path: Path) -> None:
    # The work directory starts as a copy of the session gallery: every photo is already
    # analysed there, so the pairs' ingest only records where each was seen.
    work = _copy(gallery_home, tmp_path / "work")
    out = tmp_path / "report"
    doc = cli_json(tmp_path / "home", "eval", "verify", str(FACES / "pairs.csv"),
                   "--root", str(FACES), "--work", str(work), "--out", str(out))
    assert isinstance(doc, dict)
    assert doc["schema"] == "facetrail.eval/1" and doc["kind"] == "verify"
    assert doc["model"] == "yunet-sface" and doc["score"] == SCORE_MEANING["cosine"]
    assert (doc["pairs"], doc["genuine"], doc["impostor"]) == (828, 414, 414)
    assert doc["roc_auc"] >= 0.98
    assert doc["no_face_images"] == len(doc["no_face"])
    assert doc["pairs_with_no_face"] >= doc["no_face_images"]
    assert doc["accuracy"]["folds"] == 10 and doc["accuracy"]["mean"] >= 0.97
    far2, far3 = doc["tar_at_far"]
    assert far2["target"] == 0.01 and far2["resolved"] and far2["observed"] <= 0.01
    assert far3["target"] == 0.001 and not far3["resolved"]  # 414 impostor pairs
    assert 0 < doc["eer"]["eer"] < 0.05
    assert doc["at_default_threshold"]["threshold"] == DEFAULT_FLOOR["cosine"]
    assert json.loads((out / "report.json").read_text()) == doc
    assert "| metric | value |" in (out / "report.md").read_text()
    assert "<table>" in (out / "report.html").read_text()
    for plot in ("det.png", "scores.png"):
        assert (out / plot).read_bytes()[:8] == PNG


def test_eval_verify_runs_models_side_by_side(tmp_path: Path) -> None:
    # A few pairs keep the two fresh ingests quick; the coins photo has no face for either
    # model, so its pair is counted as rejected by both (failure to enrol is not skipped).
    people = ["Barack_Obama", "Kit_Harington", "Sheryl_Crow", "Angelina_Jolie"]
    photos = {who: sorted((PEOPLE / who).iterdir())[:2] for who in people}
    rows = ["path_a,path_b,same"]
    rows += [f"{a.relative_to(FACES)},{b.relative_to(FACES)},1" for a, b in photos.values()]
    rows += [f"{photos[x][0].relative_to(FACES)},{photos[y][1].relative_to(FACES)},0"
             for x, y in zip(people, people[1:] + people[:1], strict=True)]
    rows.append(f"{photos[people[0]][0].relative_to(FACES)},noface/skimage_coins.jpg,0")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("\n".join(rows) + "\n")
    out = tmp_path / "report"
    text = run_cli(tmp_path / "home", "eval", "verify", str(pairs), "--root", str(FACES),
                   "--model", "yunet-sface", "--model", "dlib", "--out", str(out),
                   "--work", str(tmp_path / "work")).stdout
    header = next(line for line in text.splitlines() if "metric" in line)
    assert header.index("yunet-sface") < header.index("dlib")  # one column per model
    assert "ROC AUC" in text and "TAR at FAR 0.01" in text

    doc = json.loads((out / "report.json").read_text())
    assert doc["schema"] == "facetrail.eval/1" and doc["kind"] == "verify"
    assert list(doc["models"]) == ["yunet-sface", "dlib"]
    for name, summary in doc["models"].items():
        assert summary["model"] == name and summary["pairs"] == 9
        assert summary["model_key"].startswith("yunet@" if name == "yunet-sface" else "dlib")
        assert any(p.endswith("skimage_coins.jpg") for p in summary["no_face"])
        assert summary["pairs_with_no_face"] >= 1
    assert doc["models"]["dlib"]["score"] == SCORE_MEANING["l2"]
    # Each model ran in a data directory of its own.
    assert {p.name for p in (tmp_path / "work").iterdir()} == {"yunet-sface", "dlib"}
    md = (out / "report.md").read_text()
    assert "| metric | yunet-sface | dlib |" in md and "| ROC AUC |" in md
    assert "<th>yunet-sface</th><th>dlib</th>" in (out / "report.html").read_text()
    for plot in ("det.png", "scores-yunet-sface.png", "scores-dlib.png"):
        assert (out / plot).read_bytes()[:8] == PNG


def test_eval_identify_on_the_fixture_people(tmp_path: Path) -> None:
    out = tmp_path / "report"
    doc = cli_json(tmp_path / "home", "eval", "identify", str(PEOPLE), "--non-mated",
                   str(FACES / "unknown"), "--out", str(out))
    assert isinstance(doc, dict)
    folders = identity_folders(PEOPLE)
    split = split_identities(folders, 0.5, seed=0)
    assert doc["enrolled_identities"] == len(split.enrolled) == 22
    assert doc["mated_searches"] == sum(len(folders[w]) - 1 for w in split.enrolled)
    assert doc["nonmated_searches"] == sum(len(folders[w]) for w in split.never) + 4
    assert doc["gallery_faces"] >= len(split.enrolled)
    assert doc["rank_1"] >= 0.9 and doc["rank_10"] >= doc["rank_1"]
    fpir2, fpir3 = doc["fnir_at_fpir"]
    assert fpir2["target"] == 0.01 and fpir2["observed"] <= 0.01
    assert 0 <= fpir2["value"] <= fpir3["value"] <= 1
    assert fpir3["resolved"] is (doc["nonmated_searches"] * 0.003 >= 1)
    assert doc["model"] == "yunet-sface"
    default = doc["at_default_threshold"]  # what a user's search of this gallery would get
    assert default["rule"] in ("calibrated", "floor")
    assert default["threshold"] >= DEFAULT_FLOOR["cosine"]
    assert default["fpir"] <= 0.02 and 0 <= default["fnir"] <= 1
    assert (out / "det.png").read_bytes()[:8] == PNG


def test_calibration_threshold_holds_on_the_other_half(gallery: Facetrail) -> None:
    """Calibrated on half the identities, the thresholds keep their promise on the other half,
    over five splits: the threshold for FMR 1 % gives an observed FMR of at most 1 % on average
    and at most 2 % on any split; for FMR 0.1 %, at most 0.1 % on average (~5,000 impostor
    pairs a half: a few pairs' worth). The threshold for FPIR <= 1 % at a gallery of 10 faces
    gives an observed FPIR of at most 2 % over ~500 simulated searches.

    One split of five exceeds 1 % (1.64 %, 78 of 4,749 pairs; a few pairs either way):
    impostor pairs among 22 identities come in correlated clumps (Jennifer_Aniston and
    Sheryl_Crow alone give 13 of its 60 pairs scoring 0.30 or more), which the bound, counting
    pairs as independent, does not see. The shipped calibrations add crowd photos, which
    closes the gap (docs/calibration.md)."""
    faces = {p: f for p, f in largest_faces(gallery, "people").items()
             if p.parent.parent == PEOPLE}
    folders: dict[str, list[Path]] = {}
    for p in sorted(faces):
        folders.setdefault(p.parent.name, []).append(p)
    model = gallery.model

    def half(ids: tuple[str, ...]) -> tuple[np.ndarray, list[str], list[float], list[float]]:
        photos = [p for who in ids for p in folders[who]]
        vectors = np.stack([faces[p].embedding for p in photos]).astype(np.float64)
        who = [p.parent.name for p in photos]
        genuine, impostor = [], []
        for a in range(len(photos)):
            for b in range(a + 1, len(photos)):
                score = model.score(float(np.linalg.norm(vectors[a] - vectors[b])))
                (genuine if who[a] == who[b] else impostor).append(score)
        return vectors, who, genuine, impostor

    observed: dict[float, list[float]] = {0.01: [], 0.001: []}
    for seed in range(5):
        halves = split_identities(folders, 0.5, seed=seed)
        _, _, genuine_a, impostor_a = half(halves.enrolled)
        vectors, who, _, impostor_b = half(halves.never)
        cal = Calibration.fit(genuine_a, impostor_a, model=model.key, source="half A",
                              identities=len(halves.enrolled), created_at="2026-01-01T00:00:00Z")
        for target, rates in observed.items():
            rates.append(float(np.mean(np.array(impostor_b) >= cal.threshold_for_fmr(target))))

        rng, n = random.Random(seed), 10
        t_gallery = cal.threshold_for_gallery(n, 0.01)
        by_identity: dict[str, list[int]] = {}
        for k, w in enumerate(who):
            by_identity.setdefault(w, []).append(k)
        hits = searches = 0
        for k in range(len(who)):
            for _ in range(5):
                others = rng.sample([w for w in by_identity if w != who[k]], n)
                gallery_rows = [rng.choice(by_identity[w]) for w in others]
                nearest = float(np.linalg.norm(vectors[gallery_rows] - vectors[k], axis=1).min())
                hits += model.score(nearest) >= t_gallery
                searches += 1
        assert searches >= 400 and hits / searches <= 0.02, seed
    assert np.mean(observed[0.01]) <= 0.01 and max(observed[0.01]) <= 0.02, observed
    assert np.mean(observed[0.001]) <= 0.001, observed


def test_calibrate_then_search_reports_rates(gallery_home: Path, tmp_path: Path) -> None:
    home = _copy(gallery_home, tmp_path / "home")
    work = _copy(gallery_home, tmp_path / "work")
    probe = PEOPLE / "Kit_Harington" / "Kit_Harington_0001.jpg"
    shipped = cli_json(home, "search", str(probe), "--case", "C-1", "--purpose", "test")
    assert isinstance(shipped, dict)
    assert shipped["calibration"]["source"].startswith("all pairs among the largest faces")

    done = cli_json(home, "calibrate", str(PEOPLE), "--groups", str(FACES / "group"),
                    "--work", str(work), "--source", "fixture people, test run")
    assert isinstance(done, dict) and done["written_to"] == "the store"
    assert done["face_model"] == "yunet-sface" and done["model"] == shipped["model"]
    pairs = done["pairs"]
    assert pairs["between_identities"] > 10_000 and pairs["genuine"] == done["genuine"]
    # Two people in one photo are two people: the group photos' faces of quality >= 0.1,
    # and a people photo's largest face against the others in it.
    assert pairs["within_group_photos"] >= 2  # two_people.jpg, kit_with_rose.jpg at least
    assert pairs["within_people_photos"] >= 1
    assert done["impostor"] == (pairs["between_identities"] + pairs["within_people_photos"]
                                + pairs["within_group_photos"])
    out = cli_json(home, "search", str(probe), "--case", "C-1", "--purpose", "test")
    assert isinstance(out, dict)
    cal = out["calibration"]
    assert cal["source"] == "fixture people, test run" and cal["fpir_target"] == 0.01
    assert out["threshold_rule"] in ("calibrated", "floor")
    assert out["threshold"] == max(DEFAULT_FLOOR["cosine"], cal["calibrated_threshold"])
    assert cal["expected_false_at_threshold"] <= 0.01 + 1e-9
    assert out["candidates"]
    for c in out["candidates"]:
        assert c["fmr"] is not None and 0 <= c["fmr"] <= 1
        assert c["expected_false"] == pytest.approx(out["gallery_faces"] * c["fmr"])
    fmrs = [c["fmr"] for c in out["candidates"]]
    assert fmrs == sorted(fmrs), "higher scores mean lower false-match rates"

    loose = cli_json(home, "search", str(probe), "--case", "C-1", "--purpose", "test",
                     "--threshold", "0.3")
    assert isinstance(loose, dict)
    assert loose["threshold"] == 0.3 and loose["threshold_rule"] == "override"
    everything = cli_json(home, "search", str(probe), "--case", "C-1", "--purpose", "test",
                          "--include-low-quality")
    assert isinstance(everything, dict) and everything["min_quality"] == 0.0
    text = run_cli(home, "search", str(probe), "--case", "C-1", "--purpose", "test").stdout
    assert "est. FMR" in text and "E[false]" in text and "fixture people, test run" in text


def test_several_photos_of_one_person_are_searched_as_one(gallery: Facetrail) -> None:
    photos = sorted((PEOPLE / "Sheryl_Crow").iterdir())[:3]
    case = {"case_ref": "C-2", "purpose": "test"}
    for fusion in ("mean", "max"):
        result = gallery.search(photos[0], more_probes=photos[1:], fusion=fusion, top=5, **case)
        assert result.fusion == fusion and len(result.probes) == 3
        assert result.candidates and all(
            c.appearances[0].location.split("/")[-2] == "Sheryl_Crow" for c in result.candidates
        )
        assert [c.rank for c in result.candidates] == list(range(1, len(result.candidates) + 1))
    details = gallery.store.audit_rows()[-1].event.details
    assert len(details["probe_sha256s"]) == 3 and details["fusion"] == "max"
    with pytest.raises(InputError, match="applies to one probe photo"):
        gallery.search(photos[0], more_probes=photos[1:], all_faces=True, **case)
    with pytest.raises(NoFaceError, match="no face was found in probe photo 2"):
        gallery.search(photos[0], more_probes=[FACES / "noface" / "skimage_coins.jpg"], **case)


def test_eval_optout_rates_by_threshold(tmp_path: Path) -> None:
    # Four identities (Rose Leslie with the fewest photos an opt-out can be measured on, two),
    # a photo of somebody else in the gallery, and a stranger's opt-out.
    people = tmp_path / "people"
    for who in ("Barack_Obama", "James_McGreevey", "Recep_Tayyip_Erdogan", "Rose_Leslie"):
        shutil.copytree(PEOPLE / who, people / who)
    crowd = tmp_path / "others"
    crowd.mkdir()
    shutil.copy(FACES / "unknown" / "skimage_astronaut.jpg", crowd)
    out = tmp_path / "report"
    doc = cli_json(tmp_path / "home", "eval", "optout", str(people), "--groups", str(crowd),
                   "--non-mated", str(FACES / "unknown" / "lin-manuel-miranda.jpg"),
                   "--work", str(tmp_path / "work"), "--out", str(out), "--json")
    assert isinstance(doc, dict)
    assert doc["schema"] == "facetrail.eval/1" and doc["kind"] == "optout"
    assert doc["model"] == "yunet-sface" and doc["photos_per_optout"] == 1
    assert (doc["identities"], doc["optouts"], doc["mated_pairs"]) == (4, 4, 16 - 4)
    assert doc["group_faces"] == 1 and doc["stranger_optouts"] == 1
    assert doc["default_threshold"] == DEFAULT_FLOOR["cosine"]
    rows = doc["thresholds"]
    assert [r["threshold"] for r in rows] == [0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6]
    assert [r["threshold"] for r in rows if r["default"]] == [0.4]
    for r in rows:
        for key in ("missed_suppression", "false_suppression", "review_mated",
                    "stranger_false_suppression"):
            assert 0 <= r[key] <= 1
    missed = [r["missed_suppression"] for r in rows]
    false = [r["false_suppression"] for r in rows]
    # As the threshold falls an opt-out misses fewer of the requester's faces and erases more
    # of other people's.
    assert missed == sorted(missed) and missed[0] < missed[-1]
    assert false == sorted(false, reverse=True)
    assert doc["at_false_suppression"]["target"] == 1e-3
    # The index the erasure asks agrees with the scoring that suppresses.
    assert doc["index_disagreements"] == []
    assert json.loads((out / "report.json").read_text()) == doc
    assert "at 0.40 (default)" in (out / "report.md").read_text()


def test_eval_refuses_what_it_cannot_finish_before_the_work(tmp_path: Path) -> None:
    """A pairs file that makes one fold, or has one class only, and a report without
    matplotlib: refused at once with the reason, before any image is analysed."""
    a, b, c = (str(p) for p in sorted((PEOPLE / "Ashanti").glob("*.jpg"))[:3])
    jolie = str(sorted((PEOPLE / "Angelina_Jolie").glob("*.jpg"))[0])
    work = tmp_path / "work"
    one_class = tmp_path / "same.csv"
    one_class.write_text(f"path_a,path_b,same\n{a},{b},1\n{a},{c},1\n")
    lfw = tmp_path / "pairs.txt"  # LFW layout: 1 set of 1 genuine and 1 impostor pair
    lfw.write_text("1 1\nAshanti 1 2\nAshanti 1 Angelina_Jolie 1\n")
    for pairs, says in ((one_class, "only same-person pairs"), (lfw, "one fold")):
        proc = run_cli(tmp_path / "home", "eval", "verify", str(pairs), "--root", str(PEOPLE),
                       "--work", str(work), check=False)
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
        assert not work.exists()
    # A python that cannot import matplotlib: the report is refused before the work.
    blocker = tmp_path / "no-matplotlib" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('matplotlib is not installed')\n")
    ok = tmp_path / "ok.csv"
    ok.write_text(f"path_a,path_b,same\n{a},{b},1\n{a},{jolie},0\n" * 2)
    out = tmp_path / "report"
    proc = run_cli(tmp_path / "home", "eval", "verify", str(ok), "--root", str(PEOPLE),
                   "--work", str(work), "--out", str(out), check=False,
                   env_extra={"PYTHONPATH": str(blocker.parent)})
    assert proc.returncode == 2 and "eval" in proc.stderr and "matplotlib" in proc.stderr
    assert not out.exists() and not work.exists()
