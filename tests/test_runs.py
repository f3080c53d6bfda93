"""The run-directory files (sdporec/runs.py): each JSON file stamped with its schema, read back without it; files
written before schemas existed still read where their shape is unambiguous; anything else is one error naming
the file and the schema expected."""

import json

import pytest

from sdporec.errors import DataError
from sdporec.runs import (
    EVALUATION_SCHEMA,
    METRICS,
    PIPELINE_SCHEMA,
    SUMMARY_SCHEMA,
    evaluation_metrics,
    pipeline_metrics,
    read_evaluation_metrics,
    read_log,
    read_metrics,
    read_pipeline_metrics,
    read_summary,
    training_summary,
    write_json,
)

METRIC_VALUES = {"hr@1": 0.25, "mrr": 0.5, "n": 4}


def test_each_file_round_trips_with_its_schema(tmp_path):
    write_json(tmp_path / METRICS, evaluation_metrics(METRIC_VALUES, {"protocol": "ranking"}))
    assert json.loads((tmp_path / METRICS).read_text())["schema"] == EVALUATION_SCHEMA
    assert read_evaluation_metrics(tmp_path) == {**METRIC_VALUES, "protocol": "ranking"}  # the folder or the file
    assert read_metrics(tmp_path / METRICS) == (False, {**METRIC_VALUES, "protocol": "ranking"})

    write_json(tmp_path / "p.json", pipeline_metrics({"sft": METRIC_VALUES, "sdpo": METRIC_VALUES}))
    assert json.loads((tmp_path / "p.json").read_text())["schema"] == PIPELINE_SCHEMA
    assert read_pipeline_metrics(tmp_path / "p.json") == {"sft": METRIC_VALUES, "sdpo": METRIC_VALUES}
    assert read_metrics(tmp_path / "p.json") == (True, {"sft": METRIC_VALUES, "sdpo": METRIC_VALUES})

    write_json(tmp_path / "s.json", training_summary({"optimizer_steps": 3}))
    assert json.loads((tmp_path / "s.json").read_text())["schema"] == SUMMARY_SCHEMA
    assert read_summary(tmp_path / "s.json") == {"optimizer_steps": 3}
    assert read_summary(tmp_path / "absent.json") == {}


def test_files_from_before_schemas_still_read(tmp_path):
    (tmp_path / "e.json").write_text(json.dumps(METRIC_VALUES))
    (tmp_path / "p.json").write_text(json.dumps({"sft": METRIC_VALUES, "popularity": METRIC_VALUES}))
    (tmp_path / "s.json").write_text(json.dumps({"optimizer_steps": 3, "best_valid_hr@1": None}))
    assert read_evaluation_metrics(tmp_path / "e.json") == METRIC_VALUES
    assert read_metrics(tmp_path / "e.json") == (False, METRIC_VALUES)  # an evaluation, not a pipeline
    (tmp_path / "g.json").write_text(json.dumps({"schema": EVALUATION_SCHEMA, "valid_ratio": 0.5}))
    assert read_metrics(tmp_path / "g.json") == (False, {"valid_ratio": 0.5})  # its schema says which, not hr@1
    assert read_metrics(tmp_path / "p.json") == (True, {"sft": METRIC_VALUES, "popularity": METRIC_VALUES})
    assert read_summary(tmp_path / "s.json")["optimizer_steps"] == 3


@pytest.mark.parametrize(
    "reader,content,expected",
    [
        (read_evaluation_metrics, {"schema": "evaluation/2", "hr@1": 1.0}, EVALUATION_SCHEMA),
        (read_evaluation_metrics, {"schema": PIPELINE_SCHEMA, "models": {}}, EVALUATION_SCHEMA),
        (read_evaluation_metrics, {"mrr": 1.0}, EVALUATION_SCHEMA),  # no schema, and not an old evaluation
        (read_pipeline_metrics, {"schema": EVALUATION_SCHEMA, "hr@1": 1.0}, PIPELINE_SCHEMA),
        (read_pipeline_metrics, {"schema": "pipeline/9", "models": {}}, PIPELINE_SCHEMA),
        (read_summary, {"schema": "training-summary/0", "optimizer_steps": 1}, SUMMARY_SCHEMA),
    ],
)
def test_another_schema_is_one_error_naming_the_file_and_the_schema_expected(tmp_path, reader, content, expected):
    path = tmp_path / "x.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DataError) as e:
        reader(path)
    found = f"schema {content['schema']!r}" if "schema" in content else "no schema"
    assert str(e.value) == (
        f"file {path}, field 'schema': {found}, where {expected} was expected: not a file this sdporec writes "
        "there (written by another version, or another kind of file)"
    )


def test_a_pipeline_file_without_its_models_object_is_refused(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"schema": PIPELINE_SCHEMA, "models": [1, 2]}))
    with pytest.raises(DataError) as e:
        read_pipeline_metrics(tmp_path / "p.json")
    assert str(e.value) == f"file {tmp_path / 'p.json'}, field 'models': expected an object of model name -> metrics"


def test_a_cut_or_nan_file_is_refused_naming_it(tmp_path):
    (tmp_path / "cut.json").write_text('{"schema": "evaluation/1", "hr@1": 0.2')
    with pytest.raises(DataError, match="cut.json.*not valid JSON"):
        read_evaluation_metrics(tmp_path / "cut.json")
    (tmp_path / "nan.json").write_text('{"hr@1": NaN}')
    with pytest.raises(DataError, match="nan.json.*NaN"):
        read_evaluation_metrics(tmp_path / "nan.json")
    with pytest.raises(ValueError):
        write_json(tmp_path / "w.json", {"hr@1": float("nan")})  # never written either
    assert not (tmp_path / "w.json").exists()


def test_logs_keep_old_nan_rows_and_refuse_rows_that_are_not_objects(tmp_path):
    (tmp_path / "log.jsonl").write_text('{"step": 1, "grad_norm": NaN}\n{"step": 2, "grad_norm": null}\n')
    rows = read_log(tmp_path / "log.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and rows[1]["grad_norm"] is None
    (tmp_path / "log.jsonl").write_text('{"step": 1}\n[2]\n')
    with pytest.raises(DataError) as e:
        read_log(tmp_path / "log.jsonl")
    assert str(e.value) == f"file {tmp_path / 'log.jsonl'}, row line 2: expected a JSON object (a log row)"
    assert read_log(tmp_path / "none.jsonl") == []


def _predictions(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_predictions_are_keyed_by_sample_then_by_key_and_read_from_a_folder(tmp_path):
    from sdporec.runs import PREDICTIONS, read_predictions

    _predictions(
        tmp_path / PREDICTIONS,
        [{"key": "eval:0", "sample": "s0", "rank": 0}, {"key": "eval:1", "sample": "s1", "rank": 3}],
    )
    file, rows = read_predictions(tmp_path)
    assert file == str(tmp_path / PREDICTIONS) and list(rows) == ["s0", "s1"] and rows["s1"]["rank"] == 3
    old = _predictions(tmp_path / "old.jsonl", [{"key": "eval:0", "hit": True}, {"key": "eval:1", "hit": False}])
    assert list(read_predictions(old)[1]) == ["eval:0", "eval:1"]  # written before `sample` existed


@pytest.mark.parametrize(
    "rows,fragment",
    [
        ([{"key": "k", "rank": -1}], "-1 is not a rank"),
        ([{"key": "k", "rank": 1.5}], "1.5 is not a rank"),
        ([{"key": "k", "rank": True}], "True is not a rank"),
        ([{"sample": "s", "rank": 0}], "key and rank, or key and hit"),
        ([{"key": "k"}], "key and rank, or key and hit"),
        ([[1, 2]], "key and rank, or key and hit"),
        ([{"key": "a", "sample": "s", "rank": 0}, {"key": "b", "sample": "s", "rank": 1}], "'s' repeats line 1"),
        ([{"key": "a", "rank": 0}, {"key": "a", "rank": 1}], "'a' repeats line 1"),
        ([], "holds no predictions"),
    ],
)
def test_predictions_that_are_not_ours_are_one_error_naming_file_and_line(tmp_path, rows, fragment):
    from sdporec.runs import read_predictions

    path = _predictions(tmp_path / "p.jsonl", rows)
    with pytest.raises(DataError) as e:
        read_predictions(path)
    assert str(path) in str(e.value) and fragment in str(e.value)
    if len(rows) == 2:
        assert "line 2" in str(e.value)


def test_json_is_written_whole_indented_and_in_its_own_characters(tmp_path):
    write_json(tmp_path / "x.json", {"title": "Amélie", "n": 1})
    text = (tmp_path / "x.json").read_text(encoding="utf-8")
    assert text == '{\n  "title": "Amélie",\n  "n": 1\n}\n'
    assert not list(tmp_path.glob("*.tmp*"))


def test_an_empty_metrics_object_is_neither_kind(tmp_path):
    (tmp_path / "m.json").write_text("{}")
    with pytest.raises(DataError, match="no schema, where pipeline/1 was expected"):
        read_metrics(tmp_path / "m.json")
    (tmp_path / "p.json").write_text(json.dumps({"sft": METRIC_VALUES, "x": {"mrr": 1.0}}))
    with pytest.raises(DataError, match="pipeline/1"):
        read_pipeline_metrics(tmp_path / "p.json")  # not every model an old evaluation: not an old pipeline file
