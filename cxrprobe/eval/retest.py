"""The grid's arrays where the test images are scored against other labels than the support
cache's own: another dataset's test split (``--test-cache``, a cross-dataset run) or a
re-annotation of the cache's test images (``--test-labels``, e.g. Google's radiologist-
adjudicated NIH labels). Support and validation sets come from the support cache's training
and validation patients, on the support classes the map uses; each test class is scored by the
highest score of its mapped classes (``class_map``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from cxrprobe.cache.reader import FeatureCache
from cxrprobe.data.files import read_csv_columns, refuse_duplicates
from cxrprobe.data.nih import DATASET_NAME as NIH
from cxrprobe.data.rsna import DATASET_NAME as RSNA
from cxrprobe.data.rsna import OVERLAP
from cxrprobe.errors import DataError, InputError
from cxrprobe.eval.class_map import GOOGLE_2019_NIH, ClassMap, map_by_name, map_by_table, read_pairs, shipped_map
from cxrprobe.eval.grid_data import GridData, OtherLabels, grid_data
from cxrprobe.heads.registry import head_class

RSNA_OVERLAP = (f"RSNA Pneumonia: {OVERLAP}; the support and test images may be the same radiographs, so this "
                "is no independent external test")
IMAGE_COLUMNS = ("Image Index", "image_id", "ImageID")  # NIH's and Google's name first
POSITIVE, NEGATIVE, BLANK = ("yes", "1", "1.0", "true"), ("no", "0", "0.0", "false"), ("", "nan")


@dataclasses.dataclass(frozen=True)
class Retest:
    """The grid's arrays, each row's image id, the support cache's attributes, and what
    config.json records of the test set: where its labels came from, the class map, notes."""

    data: GridData
    image_ids: np.ndarray
    attrs: dict
    record: dict


def cross_dataset(support_path: Path, test_path: Path, class_map: Path | None, heads: tuple[str, ...],
                  allow_undefined: bool = False, test_bootstrap: int = 0, aggregate: str = "image") -> Retest:
    """Support sets from ``support_path``'s training patients, test images from ``test_path``'s
    test split, on the classes the two share; both caches must come from the same weights."""
    with FeatureCache(support_path) as support, FeatureCache(test_path) as test:
        if support.attrs.get("weights_sha256") != test.attrs.get("weights_sha256"):
            raise InputError(f"--test-cache {test_path} was embedded with other weights than {support_path} "
                             f"({test.attrs.get('model')}/{test.attrs.get('pretrained')} vs "
                             f"{support.attrs.get('model')}/{support.attrs.get('pretrained')}: their weights_sha256 "
                             "differ); embed both with the same model and weights")
        mapping = map_by_name(test.classes, support.classes, class_map)
        if not mapping.pairs:
            raise InputError(f"no class of {test_path} ({', '.join(test.classes)}) matches one of {support_path} "
                             f"({', '.join(support.classes)}); pair them with --class-map FILE")
        rows = np.flatnonzero(test.table.split == "test")
        if len(rows) == 0:
            raise DataError(f"--test-cache {test_path} has no test images")
        columns = [test.classes.index(name) for name in mapping.test_classes]
        datasets = {str(support.attrs.get("dataset")), str(test.attrs.get("dataset"))}
        notes = [RSNA_OVERLAP] if datasets == {NIH, RSNA} else []
        record = {"what": "cross-dataset: support sets from the support cache's training patients, the test "
                          "cache's test split scored", "test_cache": str(test_path),
                  "test_dataset": test.attrs.get("dataset"), "test_source": test.attrs.get("test_source"),
                  "test_fingerprint": test.attrs.get("dataset_fingerprint"), "notes": notes}
        data = _grid(support, mapping, heads, (test.labels[rows][:, columns], test.known[rows][:, columns]),
                     test.embeddings(rows), test.table.patient_ids[rows], test.table.study_ids[rows],
                     allow_undefined, test_bootstrap, aggregate, str(test_path))
        ids = np.concatenate([support.table.image_ids[support.table.split != "test"], test.table.image_ids[rows]])
        return Retest(data, ids, dict(support.attrs), {**record, "class_map": mapping.record()})


def relabelled(cache_path: Path, labels_path: Path, class_map: Path | None, heads: tuple[str, ...],
               allow_undefined: bool = False, test_bootstrap: int = 0, aggregate: str = "image") -> Retest:
    """The cache's test images that ``labels_path`` labels, scored against its labels, mapped
    by ``class_map`` (default: the shipped Google 2019 NIH map)."""
    labels_path, name = Path(labels_path), Path(labels_path).name
    map_path = shipped_map(GOOGLE_2019_NIH) if class_map is None else Path(class_map)
    source = f"{GOOGLE_2019_NIH} (shipped)" if class_map is None else f"--class-map {class_map}"
    pairs = read_pairs(map_path)
    table, image_column = _read_labels(labels_path)
    with FeatureCache(cache_path) as cache:
        mapping = map_by_table(pairs, tuple(c for c in table if c != image_column), cache.classes, source,
                               f"--test-labels {name}")
        if not mapping.pairs:
            raise InputError(f"{source} pairs no class of --test-labels {name} with one of the cache's")
        ids = [i.strip() for i in table[image_column]]
        refuse_duplicates(ids, name, "image ")
        line_of = {image: line for line, image in enumerate(ids)}
        test = np.flatnonzero(cache.table.split == "test")
        rows = np.array([r for r in test if cache.table.image_ids[r] in line_of], dtype=np.int64)
        if len(rows) == 0:
            raise DataError(f"none of the {len(ids):,} images of --test-labels {name} is a test image "
                            f"of {cache_path}")
        lines = [line_of[cache.table.image_ids[r]] for r in rows]
        labels, known = _values(table, mapping.test_classes, lines, name)
        elsewhere = len(set(ids) & set(cache.table.image_ids[cache.table.split != "test"].tolist()))
        notes = [f"{len(rows):,} of the cache's {len(test):,} test images are labelled there and scored"]
        if elsewhere:
            notes.append(f"{elsewhere:,} of its images are in the cache's train or val split: they are not scored "
                         "(support sets may draw them, with the cache's own labels)")
        if mapping.left_out:
            notes.append(f"left out, no counterpart among the cache's classes: {', '.join(mapping.left_out)}")
        record = {"what": "the cache's test images scored against another label table", "test_labels": str(labels_path),
                  "notes": notes}
        data = _grid(cache, mapping, heads, (labels, known), cache.embeddings(rows), cache.table.patient_ids[rows],
                     cache.table.study_ids[rows], allow_undefined, test_bootstrap, aggregate, str(labels_path))
        ids = np.concatenate([cache.table.image_ids[cache.table.split != "test"], cache.table.image_ids[rows]])
        return Retest(data, ids, dict(cache.attrs), {**record, "class_map": mapping.record()})


def _grid(support: FeatureCache, mapping: ClassMap, heads: tuple[str, ...], test_labels: tuple[np.ndarray, np.ndarray],
          test_embeddings: np.ndarray, test_patients: np.ndarray, test_studies: np.ndarray, allow_undefined: bool,
          test_bootstrap: int, aggregate: str, source: str) -> GridData:
    """The support cache's train and val rows on the classes the map uses, then the test rows
    (whose support-class labels are unknown and never read), scored against ``test_labels``
    (labels and known-mask in the map's test classes); patients and studies are kept apart by
    a prefix, as the two tables' ids may coincide."""
    classes = mapping.support_classes(support.classes)
    columns = [support.classes.index(name) for name in classes]
    rows = np.flatnonzero(support.table.split != "test")
    n_test = len(test_embeddings)
    known = np.concatenate([support.known[rows][:, columns], np.zeros((n_test, len(columns)), dtype=bool)])
    text = None
    if any(head_class(h).uses_text for h in heads):
        text = dataclasses.replace(support.text_prompts(), findings=classes)
    return grid_data(
        np.concatenate([support.embeddings(rows), test_embeddings]),
        np.concatenate([support.labels[rows][:, columns], np.zeros((n_test, len(columns)), dtype=np.uint8)]),
        np.concatenate([support.table.split[rows], np.full(n_test, "test")]),
        np.concatenate([np.char.add("support:", support.table.patient_ids[rows].astype(str)),
                        np.char.add("test:", test_patients.astype(str))]),
        known=known, normal=np.concatenate([support.normal[rows], np.zeros(n_test, dtype=bool)]), classes=classes,
        study_ids=np.concatenate([np.char.add("support:", support.table.study_ids[rows].astype(str)),
                                  np.char.add("test:", test_studies.astype(str))]),
        aggregate=aggregate, text=text, heads=heads, allow_undefined=allow_undefined, test_bootstrap=test_bootstrap,
        source=source, other_labels=OtherLabels(*test_labels, mapping.test_classes, mapping.columns(classes)),
    )


def _read_labels(path: Path) -> tuple[dict[str, list[str]], str]:
    """The label table's columns, and which is its image column."""
    if not path.is_file():
        raise InputError(f"--test-labels {path}: no such file")
    table = read_csv_columns(path)
    image = next((c for c in IMAGE_COLUMNS if c in table), None)
    if image is None:
        raise DataError(f"{path.name} has no image column ({' or '.join(IMAGE_COLUMNS)})")
    return table, image


def _values(table: dict[str, list[str]], classes: tuple[str, ...], lines: list[int],
            source: str) -> tuple[np.ndarray, np.ndarray]:
    """0/1 labels and known-mask of ``classes`` on ``lines``: YES / NO (Google's), 1 / 0 or
    true / false; a blank cell is unknown; anything else is refused, naming its line."""
    labels = np.zeros((len(lines), len(classes)), dtype=np.uint8)
    known = np.zeros(labels.shape, dtype=bool)
    for c, name in enumerate(classes):
        for k, line in enumerate(lines):
            value = table[name][line].strip().casefold()
            if value in POSITIVE or value in NEGATIVE:
                labels[k, c], known[k, c] = value in POSITIVE, True
            elif value not in BLANK:
                raise DataError(f"{source}: line {line + 2}: {name} {value[:20]!r} is not YES/NO, 1/0 or blank")
    return labels, known

