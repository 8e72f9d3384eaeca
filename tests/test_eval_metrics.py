"""The evaluation metrics and the calibration, against answers worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from facetrail.calibration import Calibration
from facetrail.eval import metrics
from facetrail.eval.runner import probe_sets, split_identities


def test_roc_auc_counts_ties_as_half() -> None:
    # 0.9 and 0.8 beat all 4 impostors; 0.4 beats 0.3 and 0.1, ties 0.4, loses to 0.5.
    assert metrics.roc_auc([0.9, 0.8, 0.4], [0.5, 0.3, 0.1, 0.4]) == pytest.approx(10.5 / 12)


def test_tar_at_far_allows_floor_of_far_times_n_impostors() -> None:
    impostor = [i / 100 for i in range(100)]  # 0.00 .. 0.99
    point = metrics.tar_at_far([0.985, 0.5, 0.99, 0.97], impostor, 0.01)
    # One impostor (0.99) may pass: the threshold sits just above 0.98.
    assert 0.98 < point.threshold < 0.981
    assert point.observed == 0.01 and point.value == 0.5 and point.resolved
    assert not metrics.tar_at_far([0.9], impostor, 0.001).resolved


def test_eer_where_fnmr_meets_fmr() -> None:
    e = metrics.eer([0.6, 0.7, 0.8, 0.9], [0.1, 0.2, 0.3, 0.65])
    assert e.eer == 0.25 and e.threshold == 0.65


def test_kfold_threshold_is_chosen_on_the_other_folds() -> None:
    # Fold 1's threshold comes from fold 0 (0.9 same, 0.1 not): 0.5, which rejects fold 1's
    # genuine 0.3. Fold 0's comes from fold 1: 0.25, which gets fold 0 right.
    acc = metrics.kfold_accuracy([0.9, 0.1, 0.3, 0.2], [True, False, True, False], [0, 0, 1, 1])
    assert acc.per_fold == (1.0, 0.5)
    assert acc.thresholds == pytest.approx((0.25, 0.5))
    assert acc.mean == 0.75 and acc.std == 0.25
    assert metrics.default_folds([True, True, False, True, False], k=2) == [0, 1, 0, 0, 1]


# A hand-checked 1:N case: gallery A, B, C (one entry each); probes 1-4 are mated,
# X, Y, Z, W are not enrolled.
GALLERY = ["A", "B", "C"]
PROBES = ["A", "A", "B", "C", "X", "Y", "Z", "W"]
SCORES = np.array([
    [0.90, 0.30, 0.20],  # A: mate first, 0.90
    [0.40, 0.60, 0.10],  # A: mate second, 0.40
    [0.20, 0.70, 0.50],  # B: mate first, 0.70
    [0.30, 0.20, 0.10],  # C: mate third, 0.10
    [0.50, 0.10, 0.20],  # X: top 0.50
    [0.20, 0.35, 0.30],  # Y: top 0.35
    [0.10, 0.10, 0.15],  # Z: top 0.15
    [0.00, 0.05, 0.00],  # W: top 0.05
])


def test_identification_metrics_on_a_hand_checked_score_matrix() -> None:
    mated, nonmated = metrics.outcomes_from_matrix(SCORES, GALLERY, PROBES, top=3)
    assert [(m.rank, m.score) for m in mated] == [(1, 0.9), (2, 0.4), (1, 0.7), (3, 0.1)]
    assert nonmated == [0.5, 0.35, 0.15, 0.05]
    assert metrics.rank_rate(mated, 1) == 0.5
    assert metrics.rank_rate(mated, 2) == 0.75
    assert metrics.rank_rate(mated, 10) == 1.0

    # FPIR 0.25 of 4 non-mated searches: one may return a candidate (X at 0.50), so the
    # threshold sits just above Y's 0.35; C's mate (0.10) is then missed.
    point = metrics.fnir_at_fpir(mated, nonmated, 0.25, rank_limit=3)
    assert 0.35 < point.threshold < 0.3501
    assert point.value == 0.25 and point.observed == 0.25 and point.resolved
    # With candidate lists of one, the second A probe's mate (rank 2) is missed too.
    assert metrics.fnir_at_fpir(mated, nonmated, 0.25, rank_limit=1).value == 0.5
    # FPIR 0: the threshold passes X's 0.50; the A probe with 0.40 is missed as well.
    strict = metrics.fnir_at_fpir(mated, nonmated, 0.0, rank_limit=3)
    assert 0.5 < strict.threshold < 0.5001 and strict.value == 0.5 and strict.observed == 0
    # 0.003 of 4 searches cannot be measured, and says so.
    assert not metrics.fnir_at_fpir(mated, nonmated, 0.003, rank_limit=3).resolved

    # A candidate list of 2 drops C's mate from the list altogether.
    short, _ = metrics.outcomes_from_matrix(SCORES, GALLERY, PROBES, top=2)
    assert short[3] == metrics.MatedOutcome(None, None)

    det = {round(t, 2): (fpir, fnir) for t, fpir, fnir in metrics.det_points(mated, nonmated, 3)}
    assert det[0.4] == (0.25, 0.25)   # X passes; C's 0.10 is missed
    assert det[0.1] == (0.75, 0.0)    # X, Y and Z pass; every mate found


def test_identity_split_and_probe_sets_are_deterministic() -> None:
    folders = {f"id{i}": [Path(f"id{i}/{j}.jpg") for j in range(i % 4 + 1)] for i in range(20)}
    one = split_identities(folders, 0.5, seed=7)
    assert one == split_identities(folders, 0.5, seed=7)
    assert one != split_identities(folders, 0.5, seed=8)
    assert not set(one.enrolled) & set(one.never)
    assert set(one.enrolled) | set(one.never) == set(folders)
    assert all(len(folders[who]) >= 2 for who in one.enrolled)
    photos = [Path("a"), Path("b"), Path("c")]
    assert probe_sets(photos, 1) == [[p] for p in photos]
    assert probe_sets(photos, 2) == [[Path("a"), Path("b")], [Path("b"), Path("c")],
                                     [Path("c"), Path("a")]]
    assert probe_sets(photos, 4) == []


def _calibration(genuine: list[float], impostor: list[float]) -> Calibration:
    return Calibration.fit(genuine, impostor, model="m", source="synthetic", identities=2,
                           created_at="2026-01-01T00:00:00Z")


def test_calibration_reads_measured_rates_and_flags_extrapolated_ones() -> None:
    rng = np.random.default_rng(0)
    impostor = np.round(rng.normal(0.15, 0.09, 20_000), 4).tolist()
    genuine = np.round(rng.normal(0.55, 0.09, 400), 4).tolist()
    cal = _calibration(genuine, impostor)
    measured = cal.fmr_at(0.30)
    assert not measured.extrapolated
    # The estimate is the 95 % upper bound of the measured rate: above it, by at most ~2 SE.
    rate = float(np.mean(np.array(impostor) >= 0.30))
    assert rate < measured.fmr < rate + 2 * math.sqrt(rate * (1 - rate) / len(impostor))
    # Far out, the tail-fitted normal (its spread bounded from above) lies above the normal
    # the scores were drawn from.
    from statistics import NormalDist

    assert cal.fmr_at(0.6).fmr > 1 - NormalDist(0.15, 0.09).cdf(0.6)
    # Beyond the 10th highest impostor the rate is extrapolated, and keeps falling.
    tenth = sorted(impostor)[-10]
    far_out = [cal.fmr_at(s) for s in (tenth + 0.02, tenth + 0.1, tenth + 0.2)]
    assert all(e.extrapolated for e in far_out)
    assert far_out[0].fmr > far_out[1].fmr > far_out[2].fmr > 0
    assert 10 / 20_000 <= cal.resolution < 30 / 20_000  # at least 10, on a 0.01 grid
    # Larger galleries need higher thresholds, and the threshold meets its target.
    thresholds = [cal.threshold_for_gallery(n, 0.01) for n in (10, 1_000, 100_000)]
    assert thresholds == sorted(thresholds) and len(set(thresholds)) == 3
    assert cal.fmr_at(thresholds[1]).fmr <= 0.01 / 1_000
    assert cal.fmr_at(thresholds[1] - 0.002).fmr > 0.01 / 1_000
    assert Calibration.from_json(cal.to_json()) == cal


def test_calibration_needs_data() -> None:
    with pytest.raises(ValueError):
        _calibration([0.5], [0.1])
    assert math.isinf(metrics.threshold_at_rate([0.1, 0.2], 1.0))


def test_an_uncalibrated_search_says_so() -> None:
    from facetrail.cli import threshold_line
    from facetrail.records import ProbeFace, ProbeInfo, SearchResult

    probe = ProbeInfo("0" * 64, 10, 10, (ProbeFace((0, 0, 5, 5), 1.0, 1.0),), (0,))
    result = SearchResult(probe=probe, candidates=(), threshold=0.45, min_quality=0.1, top=5,
                          model="other", gallery_faces=3, audit_id=1)
    assert result.calibration is None and result.threshold_rule == "fixed"
    assert "NOT calibrated" in threshold_line(result)


def test_pairs_files_lfw_and_csv(tmp_path: Path) -> None:
    from facetrail.errors import InputError
    from facetrail.eval.runner import read_pairs

    lfw = tmp_path / "pairs.txt"
    lfw.write_text("2\t1\nAnn\t1\t2\nAnn\t1\tBob\t3\nBob\t3\t4\nCid\t2\tAnn\t2\n")
    pairs = read_pairs(lfw, tmp_path)
    assert [(p.a.name, p.b.name, p.same, p.fold) for p in pairs] == [
        ("Ann_0001.jpg", "Ann_0002.jpg", True, 0),
        ("Ann_0001.jpg", "Bob_0003.jpg", False, 0),
        ("Bob_0003.jpg", "Bob_0004.jpg", True, 1),
        ("Cid_0002.jpg", "Ann_0002.jpg", False, 1),
    ]
    assert pairs[0].a == tmp_path.resolve() / "Ann" / "Ann_0001.jpg"
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text("path_a,path_b,same\na/1.jpg,b/2.jpg,0\na/1.jpg,a/3.jpg,1\n")
    assert [(p.same, p.fold) for p in read_pairs(csv_file, tmp_path)] == [(False, None),
                                                                          (True, None)]
    bad = tmp_path / "bad.txt"
    bad.write_text("hello world\n")
    with pytest.raises(InputError, match="neither"):
        read_pairs(bad, tmp_path)
