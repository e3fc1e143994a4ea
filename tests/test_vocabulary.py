"""Hospital vocabularies: --mapping translates metadata values onto the study's, every unmapped value is
reported with its rows, and --suggest-mapping writes a starting mapping with the obvious matches filled in."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from amt_core.data.vocabulary import apply_mapping, load_mapping, suggest_mapping

HOSPITAL = pd.DataFrame({
    "histology": ["Thymoma, type B2", "THYMOMA TYPE AB", "Thymoma, type B2", "mediastinal mass"],
    "contrast": ["IV contrast: no", "IV contrast: yes", "Portal venous phase", "none"],
    "vendor": ["SIEMENS", "Canon Medical Systems", "Acme Imaging", "GE"],
    "sex": ["female", "M", "Male", "F"],
})  # fmt: skip


def test_suggested_mapping_fills_the_obvious_and_leaves_the_rest_empty(tmp_path):
    text = suggest_mapping(HOSPITAL)
    mapping = yaml.safe_load(text)
    assert mapping["histology"] == {"Thymoma, type B2": "thymoma_B2", "THYMOMA TYPE AB": "thymoma_AB",
                                    "mediastinal mass": ""}  # fmt: skip
    assert mapping["contrast"] == {
        "IV contrast: no": "none",
        "IV contrast: yes": "",
        "Portal venous phase": "venous",
    }
    assert mapping["vendor"] == {"SIEMENS": "Siemens", "Canon Medical Systems": "Canon", "Acme Imaging": ""}
    assert mapping["sex"] == {"female": "F", "Male": "M"}  # values in the vocabulary need no entry
    assert text.count("# TODO: no obvious match") == 3
    (tmp_path / "m.yaml").write_text(text)
    assert load_mapping(tmp_path / "m.yaml")["vendor"]["Acme Imaging"] is None  # loadable as written


def test_unmapped_values_are_reported_all_at_once_with_their_rows(tmp_path):
    (tmp_path / "m.yaml").write_text(suggest_mapping(HOSPITAL))
    meta, problems = apply_mapping(HOSPITAL, load_mapping(tmp_path / "m.yaml"))
    assert problems == [
        "histology 'mediastinal mass' (row 5) has no mapping (to one of " + ", ".join(
            ["thymoma_A", "thymoma_AB", "thymoma_B1", "thymoma_B2", "thymoma_B3", "thymic_carcinoma", "lymphoma",
             "germ_cell_tumour", "thymic_cyst", "other"]) + ")",
        "contrast 'IV contrast: yes' (row 3) has no mapping (to one of none, venous, arterial)",
        "vendor 'Acme Imaging' (row 4) has no mapping (to one of GE, Siemens, Philips, Canon, Fujifilm)",
    ]  # fmt: skip
    assert list(meta["histology"][:3]) == ["thymoma_B2", "thymoma_AB", "thymoma_B2"]
    assert list(meta["sex"]) == ["F", "M", "M", "F"] and list(meta["vendor"][:2]) == ["Siemens", "Canon"]


def test_a_mapping_onto_a_value_outside_the_vocabulary_is_refused(tmp_path):
    (tmp_path / "m.yaml").write_text("histology:\n  'Thymoma B2': thymoma_b2\nscanner:\n  x: y\n")
    with pytest.raises(
        ValueError,
        match=r"m.yaml: .*'Thymoma B2' is mapped to 'thymoma_b2', which is not one of "
        r"thymoma_A.*; unknown column 'scanner'",
    ):
        load_mapping(tmp_path / "m.yaml")


def test_cli_suggest_then_import_with_the_mapping(tmp_path, capsys):
    from amt_core.cli import main
    from amt_core.data.cases import read_cases
    from amt_core.data.volume import write_volume

    src = tmp_path / "src"
    rows = []
    for k, (histology, vendor) in enumerate([("Thymoma, type B2", "SIEMENS"), ("Thymic carcinoma", "Acme")]):
        hu = np.full((10, 10, 6), -1000.0, np.float32)
        hu[2:8, 2:8, 1:5] = 40.0
        mask = np.zeros(hu.shape, np.uint8)
        mask[4:6, 4:6, 2:4] = 1
        write_volume(hu, np.eye(4), src / f"c{k}.nii.gz")
        write_volume(mask, np.eye(4), src / f"l{k}.nii.gz")
        rows.append(
            {
                "image": f"c{k}.nii.gz",
                "label": f"l{k}.nii.gz",
                "split": "train",
                "institution": "H",
                "sex": "Female",
                "histology": histology,
                "contrast": "IV contrast: yes",
                "vendor": vendor,
            }
        )
    pd.DataFrame(rows).to_csv(tmp_path / "meta.csv", index=False)
    mapping = tmp_path / "mapping.yaml"
    assert main(["import", "--metadata", str(tmp_path / "meta.csv"), "--suggest-mapping", str(mapping)]) == 0
    assert "2 value(s) left to map" in capsys.readouterr().out
    args = [
        "import",
        "--source",
        str(src),
        "--metadata",
        str(tmp_path / "meta.csv"),
        "--out",
        str(tmp_path / "c"),
        "--mapping",
        str(mapping),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "contrast 'IV contrast: yes' (rows 2, 3) has no mapping" in err and "vendor 'Acme' (row 3)" in err
    assert not (tmp_path / "c").exists()
    mapping.write_text(
        mapping.read_text()
        .replace('"IV contrast: yes": ""', '"IV contrast: yes": venous')
        .replace('"Acme": ""', '"Acme": GE')
    )
    assert main(args) == 0
    df = read_cases(tmp_path / "c" / "cases.csv")
    assert list(df["histology"]) == ["thymoma_B2", "thymic_carcinoma"] and list(df["vendor"]) == [
        "Siemens",
        "GE",
    ]
    assert list(df["contrast"]) == ["venous", "venous"] and list(df["sex"]) == ["F", "F"]
