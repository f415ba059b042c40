"""Build decisions and their reasons, without storage (queries are passed in)."""

from generator.builder.decide import (
    BASE_MISSING,
    BASE_MOVED,
    CHANGED,
    IMAGE_MISSING,
    NEW,
    PARENT_REBUILT,
    TAGS_MOVED,
    UP_TO_DATE,
    BuildRecord,
    decide,
    read_record,
    write_record,
)
from generator.builder.outputs import build_id_tag, content_key

ROOT = BuildRecord(files_sha256="f", parent_id="", base_id="b", key="k", image_id="i")
CHILD = BuildRecord(files_sha256="f", parent_id="p", base_id="", key="k", image_id="i")


def never(tag: str) -> bool:
    return False


def always(tag: str) -> bool:
    return True


def test_up_to_date_when_build_id_tag_exists_and_tags_in_place():
    seen = []
    decision = decide("f", "", "b", ROOT, lambda tag: seen.append(tag) or True, always)
    assert decision.action == "skip" and decision.reasons == (UP_TO_DATE,)
    assert seen == [build_id_tag(content_key("f", "", "b"))]


def test_retag_when_build_exists_but_tags_moved():
    decision = decide("f", "", "b", ROOT, always, never)
    assert decision.action == "retag" and decision.reasons == (TAGS_MOVED,)


def test_new_image():
    assert decide("f", "", "b", None, never, never).reasons == (NEW,)
    assert decide("f", "", None, None, never, never).reasons == (NEW, BASE_MISSING)


def test_reasons_compare_with_previous_inputs():
    assert decide("f2", "", "b", ROOT, never, never).reasons == (CHANGED,)
    assert decide("f", "", "b2", ROOT, never, never).reasons == (BASE_MOVED,)
    assert decide("f2", "", "b2", ROOT, never, never).reasons == (CHANGED, BASE_MOVED)
    assert decide("f", "p2", "", CHILD, never, never).reasons == (PARENT_REBUILT,)
    assert decide("f", "", "b", ROOT, never, never).reasons == (IMAGE_MISSING,)


def test_parent_still_to_build_means_build_without_key():
    decision = decide("f", None, "", CHILD, always, always)
    assert decision.action == "build" and decision.key is None and decision.build_id is None
    assert decision.reasons == (PARENT_REBUILT,)
    assert decide("f2", None, "", CHILD, always, always).reasons == (CHANGED, PARENT_REBUILT)


def test_record_round_trip_and_corrupt_record(tmp_path):
    assert read_record(tmp_path, "x") is None
    write_record(tmp_path, "x", ROOT)
    assert read_record(tmp_path, "x") == ROOT
    (tmp_path / "builds" / "x.json").write_text("{")
    assert read_record(tmp_path, "x") is None
