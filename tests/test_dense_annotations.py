"""Readers of the seeds' dense downstream formats, and the targets' cache geometry."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from workbench.data.annotations import (
    AnnotationError,
    demo_annotations,
    read_annotations,
    read_object_cxr,
    read_rsna,
    read_siim,
    rle_decode,
    rle_encode,
)

# A 3 x 4 mask: column 1 rows 0-1, and the bottom pixel of column 3. Column-major pixel indices
# are 3, 4 and 11: runs (3, 2) and (11, 1), the second starting 6 pixels after the first ends.
MASK = np.zeros((3, 4), dtype=bool)
MASK[0:2, 1] = True
MASK[2, 3] = True
RLE = "3 2 6 1"


def test_siim_rle_is_relative_and_column_major():
    assert np.array_equal(rle_decode(RLE, 3, 4), MASK)
    assert rle_encode(MASK) == RLE
    # read as absolute starts the second run would land on pixel 6 (row 0, column 2) instead
    assert not rle_decode(RLE, 3, 4)[0, 2]


def test_siim_empty_mask_is_minus_one_both_ways():
    assert not rle_decode("-1", 3, 4).any() and rle_decode(" -1", 3, 4).shape == (3, 4)
    assert rle_encode(np.zeros((5, 5), bool)) == "-1"


def test_rle_round_trips_a_random_mask():
    mask = np.random.default_rng(0).random((17, 23)) > 0.6
    assert np.array_equal(rle_decode(rle_encode(mask), 17, 23), mask)


def test_bad_rle_fails_naming_the_file_and_image(tmp_path):
    path = tmp_path / "train-rle.csv"
    path.write_text("ImageId, EncodedPixels\nimgA, 3 two\n")
    with pytest.raises(AnnotationError, match=r"train-rle\.csv.*imgA"):
        read_siim(path, size=(3, 4))
    path.write_text("ImageId, EncodedPixels\nimgA, 10 5\n")  # runs past a 3 x 4 image
    with pytest.raises(AnnotationError, match="image size"):
        read_siim(path, size=(3, 4))


def test_siim_reader_unions_an_images_rows_and_keeps_negatives(tmp_path):
    path = tmp_path / "train-rle.csv"
    # SIIM's released header and values carry a leading space
    path.write_text(f"ImageId, EncodedPixels\nimgA, 3 2\nimgA, 11 1\nimgB, -1\n")
    ann = read_siim(path, size=(3, 4))
    assert np.array_equal(ann.mask("imgA"), MASK)
    assert not ann.mask("imgB").any() and len(ann.box_array("imgB")) == 0
    assert ann.box_array("imgA").tolist() == [[1, 0, 4, 3]]  # the extent of the union, exclusive ends
    assert ann.key("other", "/data/dicom/imgB.dcm") == "imgB" and ann.key("nobody", "") is None


def test_rsna_reader_turns_xywh_into_xyxy_and_target0_into_no_box(tmp_path):
    path = tmp_path / "stage_2_train_labels.csv"
    path.write_text("patientId,x,y,width,height,Target\n"
                    "p1,264.0,152.0,213.0,379.0,1\np1,562.0,152.0,256.0,453.0,1\np2,,,,,0\n")
    ann = read_rsna(path)
    assert ann.box_array("p1").tolist() == [[264, 152, 477, 531], [562, 152, 818, 605]]
    assert ann.box_array("p2").shape == (0, 4)
    path.write_text("patientId,x,y,width,height,Target\np3,,,,,1\n")
    with pytest.raises(AnnotationError, match="line 2.*p3"):
        read_rsna(path)


def test_object_cxr_reader_reads_rectangles_ellipses_and_polygons(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('image_name,annotation\n'
                    '00001.jpg,0 10 20 30 40;1 50 60 70 90\n'
                    '00002.jpg,2 5 5 25 8 15 30\n'
                    '00003.jpg,\n')
    ann = read_object_cxr(path)
    assert ann.box_array("00001").tolist() == [[10, 20, 30, 40], [50, 60, 70, 90]]
    assert ann.box_array("00002").tolist() == [[5, 5, 25, 30]]  # a polygon's extent
    assert ann.box_array("00003").shape == (0, 4)
    path.write_text("image_name,annotation\n00004.jpg,3 1 2 3 4\n")
    with pytest.raises(AnnotationError, match=r"00004\.jpg"):
        read_object_cxr(path)


def test_read_annotations_tells_formats_apart_and_names_missing_files(tmp_path):
    rsna = tmp_path / "labels.csv"
    rsna.write_text("patientId,x,y,width,height,Target\np2,,,,,0\n")
    assert read_annotations(rsna).source == "rsna"
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(AnnotationError, match="other.csv"):
        read_annotations(other)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_annotations(tmp_path / "missing.csv")


def test_letterboxed_targets_follow_the_letterboxed_image():
    from workbench.data.cache import letterbox
    from workbench.data.dense import letterbox_boxes, letterbox_mask

    image = np.zeros((40, 80), np.uint8)
    image[10:30, 20:60] = 255  # a bright block, also the mask and the box
    cached = letterbox(image, 32)
    mask = letterbox_mask(image > 0, 32)
    box = letterbox_boxes(np.array([[20, 10, 60, 30]]), 40, 80, 32)[0]
    assert cached.shape == mask.shape == (32, 32)
    assert np.mean((cached > 127) == mask) > 0.97
    x0, y0, x1, y1 = box
    assert (x0, y0, x1, y1) == pytest.approx((8, 12, 24, 20))  # scale 0.4, 8 px of padding on top
    assert mask[int(y0):int(y1), int(x0):int(x1)].all()


def test_demo_annotations_are_the_phantoms_masks_and_boxes(tiny_manifest):
    rows = tiny_manifest[tiny_manifest["modality"] == "cxr"]
    row = next(r for r in rows.itertuples() if json.loads(r.finding_boxes))
    name, box = next(iter(json.loads(row.finding_boxes).items()))
    ann = demo_annotations(rows, [name])
    assert ann.box_array(row.study_id).tolist() == [box]
    with np.load(row.mask_path) as z:
        assert np.array_equal(ann.mask(row.study_id), z[name])
    x0, y0, x1, y1 = box
    mask = ann.mask(row.study_id)
    assert mask[y0:y1, x0:x1].any() and not mask[:y0].any() and not mask[y1:].any()
    with pytest.raises(AnnotationError, match="mask_path"):
        demo_annotations(pd.DataFrame({"study_id": ["s1"]}), [name])
