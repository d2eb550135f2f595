"""zoo.bench.ablation: an arm trains through the card's stage with its config overrides applied, a
finished run can stand in for an arm, and the suites name arms the registry can build."""

import json

import pytest

from zoo import registry
from zoo.bench import ablation

# a handful of tiny procedural scenes, so one arm trains in seconds
TINY = {"train_images": "4", "val_images": "2", "batch_size": "2", "log_every": "1", "eval_batch_size": "2"}


def test_every_suite_arm_builds_with_its_overrides():
    for suite, arms in ablation.SUITES.items():
        for arm in arms:
            card = registry.get_card(arm.model)
            assert arm.variant in card.variants and card.train_stages, (suite, arm.name)
            config = registry.variant_config(arm.model, arm.variant, arm.config)
            for key, value in arm.config.items():
                assert getattr(config, key) == value
            stage = next(iter(card.train_stages.values()))
            stage.config_cls().override(dict(arm.train))  # every training override names a real field


def test_train_arm_applies_overrides_and_reuse_reads_it_back(tmp_path):
    arm = ablation.Arm("every", "vidt", config={"cross_attention_stages": (0, 1, 2, 3)}, train=TINY)
    run = ablation.train_arm(arm, steps=2, seed=0, out=tmp_path / "every")
    assert run["steps"] == 2 and "box_AP" in run["metrics"]
    meta = json.loads((tmp_path / "every" / "model.json").read_text())
    assert meta["config_overrides"] == {"cross_attention_stages": [0, 1, 2, 3]} and meta["train_config"]["train_images"] == 4
    # the saved weights load into the overridden config, not the card's default
    pipeline = ablation.build_arm(arm, run["weights"])
    assert pipeline.config.cross_attention_stages == (0, 1, 2, 3)
    # a zoo-train-style run (same sidecar) stands in for the arm; a run of another model is refused
    reused = ablation.reuse_arm(arm, tmp_path / "every")
    assert reused["metrics"] == run["metrics"] and reused["steps"] == 2
    with pytest.raises(SystemExit, match="vidt-plus/micro"):
        ablation.reuse_arm(ablation.Arm("plus", "vidt-plus"), tmp_path / "every")
    latency = ablation.arm_latency([arm], {"every": run}, budget_s=0.5)
    assert latency["every"]["n"] >= 10 and latency["every"]["median_ms"] > 0


def test_single_task_arms_share_the_joint_budget():
    single = next(a for a in ablation.SUITES["oneformer"] if a.name == "semantic")
    assert round(600 * single.step_share) == 200  # three single-task arms share the joint arm's budget


def test_oneformer_arm_is_also_scored_at_a_lower_mask_threshold(tmp_path):
    arm = ablation.Arm("semantic", "oneformer", train={**TINY, "tasks": "semantic", "samples_per_epoch": "4"})
    run = ablation.train_arm(arm, steps=1, seed=0, out=tmp_path / "semantic")
    extra = ablation.lower_threshold_metrics(arm, run, threshold=0.4)
    assert set(extra) == {"pq@0.4", "pq_things@0.4", "pq_stuff@0.4"}
    assert all(0.0 <= v <= 100.0 for v in extra.values())
    assert ablation.lower_threshold_metrics(ablation.Arm("last", "vidt"), run) == {}  # detection arms: nothing extra


def test_seeds_give_mean_spread_and_paired_differences_and_resume(tmp_path, monkeypatch, capsys):
    tiny = (ablation.Arm("a", "vidt", train=TINY), ablation.Arm("b", "vidt", config={"cross_attention_stages": (0, 1, 2, 3)}, train=TINY))
    monkeypatch.setitem(ablation.SUITES, "tiny", tiny)
    argv = ["tiny", "--steps", "1", "--seeds", "0,1", "--out", str(tmp_path / "runs"), "--results", str(tmp_path), "--latency-budget-s", "0.2",
            "--set", "lr=0.0003", "--set", "val_images=3"]
    assert ablation.main(argv) == 0
    meta = json.loads((tmp_path / "runs" / "tiny" / "b-s1" / "model.json").read_text())
    assert meta["train_config"]["lr"] == 0.0003 and meta["train_config"]["val_images"] == 2  # the common override; the arm's own wins
    assert {p.name for p in (tmp_path / "runs" / "tiny").iterdir()} == {"a", "a-s1", "b", "b-s1"}
    doc = json.loads(next(tmp_path.glob("ablation-tiny-2seeds-1steps-*.json")).read_text())  # not a single-seed document's name
    assert doc["seeds"] == [0, 1]
    arm_a = doc["arms"][0]
    ap = [arm_a["seeds"][s]["metrics"]["box_AP"] for s in ("0", "1")]
    assert arm_a["summary"]["box_AP"]["n"] == 2 and arm_a["summary"]["box_AP"]["mean"] == pytest.approx(sum(ap) / 2)
    b_minus_a = doc["paired"]["b minus a"]["box_AP"]["values"]
    assert b_minus_a == pytest.approx([doc["arms"][1]["seeds"][s]["metrics"]["box_AP"] - arm_a["seeds"][s]["metrics"]["box_AP"] for s in ("0", "1")])
    # a second call picks the finished runs up instead of training again; another step count is refused
    capsys.readouterr()
    assert ablation.main(argv) == 0
    assert "finished earlier" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="1-step run, this ablation trains 2"):
        ablation.main([*argv[:2], "2", *argv[3:]])


def test_family_suites_train_per_seed_pick_finished_runs_up_and_pair_with_the_first_arm(tmp_path):
    """train_seeds / collect_seeds / seed_summary: the pool runner the family suites (anytext, nct, lct) share."""
    arms = (ablation.Arm("a+b", "vidt", train=TINY), ablation.Arm("c", "vidt", train={**TINY, "lr": "0.0003"}))
    runs = ablation.train_seeds(arms, 1, [0, 1], tmp_path, common={"lr": "0.0002", "val_images": "3"})
    assert (tmp_path / "aplus-b" / "seed1" / "model.json").is_file()  # "+" spelt "plus-" on disk
    meta = json.loads((tmp_path / "c" / "seed0" / "model.json").read_text())
    assert meta["train_config"]["lr"] == 0.0003 and meta["train_config"]["val_images"] == 2  # the arm's own overrides win
    assert ablation.collect_seeds(arms, [0, 1, 2], tmp_path).keys() == {"a+b", "c"}
    again = ablation.train_seeds(arms, 1, [0, 1], tmp_path)  # finished: read back, not retrained
    assert again["c"][1]["metrics"] == runs["c"][1]["metrics"]
    with pytest.raises(SystemExit, match="1-step run, this ablation trains 2"):
        ablation.train_seeds(arms, 2, [0], tmp_path)
    result = ablation.seed_summary(arms, runs, 1, [0, 1], common={"x": "1"})
    ap = [runs["c"][s]["metrics"]["box_AP"] - runs["a+b"][s]["metrics"]["box_AP"] for s in (0, 1)]
    assert result["common"] == {"x": "1"} and result["arms"][1]["summary"]["box_AP"]["n"] == 2
    assert result["paired"]["c minus a+b"]["box_AP"]["values"] == pytest.approx(ap)
