"""What a calibrated score says, in the words the pages use (calibration.rate_in_words)."""

from __future__ import annotations

from facetrail.calibration import expected_in_words, rate_in_words


def test_a_measured_rate_is_one_in_n_to_two_figures() -> None:
    assert rate_in_words(1 / 163_000, False, 1e-6) == (
        "about 1 in 160,000 unrelated faces score this high")
    assert rate_in_words(0.013, False, 1e-6) == "about 1 in 77 unrelated faces score this high"
    assert rate_in_words(0.7, False, 1e-6) == "half or more of unrelated faces score this high"


def test_beyond_the_calibration_only_a_bound_is_said() -> None:
    said = rate_in_words(1.5e-20, True, 2.3e-7)
    assert said == ("fewer than 1 in 4,300,000 unrelated faces score this high "
                    "(beyond what was measured)")
    assert "e-" not in expected_in_words(3.5e-18, True, 2.3e-7, 480)
    assert expected_in_words(3.5e-18, True, 2.3e-7, 480).startswith(
        "fewer than 1 search in 9,100 of this gallery")


def test_expected_false_candidates_in_words() -> None:
    assert expected_in_words(0.0031, False, 1e-6, 480) == (
        "about 1 search in 320 of this gallery would show an unrelated face scoring this high")
    assert expected_in_words(3.4, False, 1e-6, 480) == (
        "about 3.4 unrelated faces in this gallery are expected to score this high")
    assert expected_in_words(34.4, False, 1e-6, 480).startswith("about 34 unrelated faces")


def test_a_threshold_beyond_what_was_measured_is_only_bounded() -> None:
    """The threshold's expected false candidates rest on a rate below the calibration's
    resolution: said as a bound, not as 'about'."""
    from facetrail.calibration import beyond_measured

    assert beyond_measured(0.0097, 251, 7.3e-4) and not beyond_measured(0.5, 251, 7.3e-4)
    said = expected_in_words(0.0097, beyond_measured(0.0097, 251, 7.3e-4), 7.3e-4, 251)
    assert said.startswith("fewer than 1 search in 5 ") and "beyond what was measured" in said
