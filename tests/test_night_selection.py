"""The md5 night rule selects exactly the reference's images (docs/reference.md §md5-selection)."""

import hashlib
import random
import string

import pytest

from dsa_plugin.night import image_name, is_night, night_score, select_night


def reference_rule(name: str, label: str, ratio: float, prefix: str) -> bool:
    """Independent literal computation: the last two digest *bytes* are the last four hex digits."""
    digest = hashlib.md5(name.encode("utf-8")).digest()
    r = (digest[-2] * 256 + digest[-1]) / 65536.0
    return label[: len(prefix)] == prefix and r < ratio


@pytest.mark.parametrize(
    "name, tail, score, night",
    [
        ("015bb8aa57c3fbebc41daca6a093f639", "2bb9", 0.1708, True),
        ("3fb7b4f3c9560312f1e36f00a7abb38a", "b124", 0.6920, False),
        ("n0", "0f17", 0.0589, True),
    ],
)
def test_reference_vectors(name, tail, score, night):
    assert hashlib.md5(name.encode()).hexdigest()[-4:] == tail
    assert night_score(name) == pytest.approx(score, abs=5e-5)
    assert night_score(name) == int(tail, 16) / 65536
    assert is_night(name, "anc") is night
    assert is_night(name, "anc-pool-mine") is night
    assert is_night(name, "anc-mine") is night
    for label in ("pos", "neg", "neg-pool-mine", "", "xanc"):
        assert is_night(name, label) is False


def test_property_10000_random_names():
    rng = random.Random(0)
    alphabet = string.ascii_letters + string.digits + "_-.é√"
    names = []
    for i in range(10_000):
        if i % 2:
            names.append("".join(rng.choice("0123456789abcdef") for _ in range(32)))
        else:
            names.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 20))))
    labels = [rng.choice(["anc", "anc-pool-mine", "anc-mine", "pos", "neg", "neg-pool-mine", ""]) for _ in names]
    for ratio in (0.25, 0.0, 0.1, 0.5, 1.0):
        got = select_night(names, labels, ratio=ratio, prefix="anc")
        want = [reference_rule(n, lab, ratio, "anc") for n, lab in zip(names, labels)]
        assert got == want, ratio
        assert got == [is_night(n, lab, ratio) for n, lab in zip(names, labels)]
    # other prefix
    assert select_night(names, labels, 0.3, "pos") == [
        reference_rule(n, lab, 0.3, "pos") for n, lab in zip(names, labels)
    ]
    # with one label for all, about a quarter are night
    frac = sum(select_night(names, "anc")) / len(names)
    assert abs(frac - 0.25) < 0.02


def test_image_name():
    assert image_name("ims/39/f6/93/015bb8aa57c3fbebc41daca6a093f639") == "015bb8aa57c3fbebc41daca6a093f639"
    assert image_name("/a/b/night_0001.jpg") == "night_0001"
    assert image_name("x.tar.gz") == "x.tar"


def test_bad_arguments():
    with pytest.raises(ValueError, match="ratio"):
        is_night("a", "anc", ratio=1.5)
    with pytest.raises(ValueError, match="prefix"):
        is_night("a", "anc", prefix="")
    with pytest.raises(ValueError, match="2 names but 1 labels"):
        select_night(["a", "b"], ["anc"])
    with pytest.raises(TypeError, match="image name"):
        night_score(123)


# Names whose md5 ends exactly on a ratio: the comparison is strict ("below the ratio"), so a
# score equal to the ratio is *not* night (docs/reference.md §md5-selection).
BOUNDARY = [  # (name, last 4 hex digits, the ratio its score equals)
    ("boundary73102", "4000", 0.25),
    ("boundary29689", "8000", 0.5),
    ("boundary51615", "0000", 0.0),
]


@pytest.mark.parametrize("name, tail, ratio", BOUNDARY)
def test_score_equal_to_the_ratio_is_not_night(name, tail, ratio):
    assert hashlib.md5(name.encode()).hexdigest()[-4:] == tail
    assert night_score(name) == ratio
    assert is_night(name, "anc", ratio=ratio) is False
    assert select_night([name], "anc", ratio=ratio) == [False]
    assert reference_rule(name, "anc", ratio, "anc") is False
    # Just above the score, the same name is night.
    assert is_night(name, "anc", ratio=ratio + 1 / 65536) is True
    assert select_night([name], ["anc-mine"], ratio=ratio + 1 / 65536) == [True]


def test_score_just_below_the_paper_ratio_is_night():
    name = "boundary41981"  # md5 ends in 3fff: 0.25 - 1/65536
    assert hashlib.md5(name.encode()).hexdigest()[-4:] == "3fff"
    assert is_night(name, "anc") is True
    assert select_night([name], "anc") == [True]
