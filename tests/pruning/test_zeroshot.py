"""Zero-shot scoring and BIG-bench task files on a tiny random Llama and task files written
here: no download, no real model."""

from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nmlab.pruning import tasks as T
from nmlab.pruning.errors import PruningError
from nmlab.pruning.tasks import Question, ensure_tasks, load_task, parse_task, subset
from nmlab.pruning.zeroshot import (
    SHARED_MIN,
    _common_start,
    encode_pair,
    evaluate_task,
    run_zeroshot,
    score_batch,
    score_choices,
)

CORPUS = [
    "The cat sat on the mat because it was warm.",
    "Tracy went home and made a new plan with Riley.",
    "Is it common to see frost during commencements? Yes. No.",
    "The child started crying because the child hurt their knee.",
] * 4


@pytest.fixture(scope="module")
def bpe_model():
    """A byte-level BPE tokenizer trained here and a random 2-layer Llama over its vocab."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return LlamaForCausalLM(config).eval(), tokenizer


def naive_loglik(model, tokenizer, context: str, choice: str) -> float:
    """Full-sequence forward of prompt + choice, no cache, no padding."""
    ctx, cont = encode_pair(tokenizer, context, choice)
    ctx = ctx or [tokenizer.bos_token_id]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = F.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    return sum(logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont))


ITEMS = [
    ("The cat sat on the mat because\nA: ", ["it was warm.", "Riley", "a new plan with Riley."]),
    ("Q: Is it common to see frost?\nA: ", ["Yes", "No"]),
    ("", ["The child started crying.", "The child hurt their knee because"]),
    ("Tracy went home and", ["made", "sat on the mat", "crying", "Yes.", "No."]),
]


def test_encode_pair_moves_trailing_space_to_the_choice(bpe_model):
    _, tokenizer = bpe_model
    ctx, cont = encode_pair(tokenizer, "Q: Is it common?\nA: ", "Yes")
    assert ctx == tokenizer.encode("Q: Is it common?\nA:", add_special_tokens=False)
    assert tokenizer.decode(cont) == " Yes"


def test_shared_prefix_batch_equals_naive_loglik(bpe_model):
    model, tokenizer = bpe_model
    batched = score_batch(model, tokenizer, ITEMS)  # prompts of 4 lengths, padded together
    for (context, choices), scored in zip(ITEMS, batched, strict=True):
        single = score_choices(model, tokenizer, context, choices)
        for choice, (ll, n_tok, n_chars), (ll1, _, _) in zip(choices, scored, single, strict=True):
            expected = naive_loglik(model, tokenizer, context, choice)
            assert ll == pytest.approx(expected, abs=1e-4)
            assert ll1 == pytest.approx(expected, abs=1e-4)
            assert n_tok == len(encode_pair(tokenizer, context, choice)[1])
            assert n_chars == len(choice)


def test_shared_few_shot_start_runs_once_and_changes_nothing(bpe_model):
    model, tokenizer = bpe_model
    shot = "Q: Is it common to see frost?\nA: Yes.\n\n" * 3  # a task_prefix of examples
    items = [(shot + context, choices) for context, choices in ITEMS]
    ctxs = [encode_pair(tokenizer, c, ch[0])[0] for c, ch in items]
    assert _common_start(ctxs, 10**6) >= SHARED_MIN  # the shared pass is taken
    batched = score_batch(model, tokenizer, items)
    for (context, choices), scored in zip(items, batched, strict=True):
        for choice, (ll, _, _) in zip(choices, scored, strict=True):
            assert ll == pytest.approx(naive_loglik(model, tokenizer, context, choice), abs=1e-4)


def test_accuracy_on_a_uniform_model(bpe_model):
    """Zero final norm -> all logits 0: log p = -tokens * log V. The raw score picks the
    choice of fewest tokens, acc_norm the fewest tokens per character."""
    model, tokenizer = bpe_model
    uniform = type(model)(model.config).eval()
    uniform.model.norm.weight.data.zero_()
    short, long = "Yes", "The child started crying because the child hurt their knee."
    n_short = len(encode_pair(tokenizer, "A: ", short)[1])
    n_long = len(encode_pair(tokenizer, "A: ", long)[1])
    assert n_short < n_long and n_short / len(short) > n_long / len(long)  # the premise
    scored = score_choices(uniform, tokenizer, "A: ", [short, long])
    log_v = math.log(model.config.vocab_size)
    assert scored[0][0] == pytest.approx(-n_short * log_v, abs=1e-4)
    assert scored[1][0] == pytest.approx(-n_long * log_v, abs=1e-4)

    n_no = len(encode_pair(tokenizer, "A: ", "zqxj")[1])
    assert n_no >= n_short and n_no / 4 > n_long / len(long)  # "zqxj" loses both ways
    questions = [
        Question("A: ", (short, long), (1.0, 0.0)),  # raw right, normalised wrong
        Question("A: ", (short, long), (0.0, 1.0)),  # raw wrong, normalised right
        Question("A: ", (short, long), (1.0, 1.0)),  # both correct: any pick counts
        Question("A: ", (long, short, "zqxj"), (0.0, 0.0, 1.0)),  # wrong both ways
    ]
    r = evaluate_task(uniform, tokenizer, questions, batch_size=3, progress=False)
    assert r["n"] == 4
    assert r["acc"] == pytest.approx(2 / 4)
    assert r["acc_norm"] == pytest.approx(2 / 4)
    assert r["chance"] == pytest.approx((0.5 + 0.5 + 1 + 1 / 3) / 4)
    se = math.sqrt(4 * 0.25 / 3 / 4)  # outcomes 1, 0, 1, 0: sample variance 1/3
    assert r["acc_stderr"] == pytest.approx(se) and r["acc_norm_stderr"] == pytest.approx(se)


# ---------------------------------------------------------------- task files


def write_task(path: Path, examples: list[dict], **fields) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": path.parent.name, **fields, "examples": examples}))
    return path


def mc(i: int) -> dict:
    return {"input": f"question {i}?", "target_scores": {f"right {i}": 1, f"wrong {i}": 0}}


def test_prompt_format_defaults_and_prefixes(tmp_path):
    ex = {"input": "Why?", "target_scores": {"b": 0, "a": 1}}
    default = parse_task(write_task(tmp_path / "d" / "task.json", [ex]))[0][0]
    assert default.context == "\nQ: Why?\n  choice: a\n  choice: b\nA: "
    assert default.choices == ("b", "a") and default.correct == frozenset({1})
    custom = write_task(
        tmp_path / "c" / "task.json",
        [ex, ex, {"input": "no scores", "target": "x"}],  # a duplicate, an unusable one
        task_prefix="Answer.\n",
        example_input_prefix="\nexample: ",
        example_output_prefix="\nanswer: ",
        choice_prefix="\n - ",
        append_choices_to_input=True,
    )
    questions, skipped = parse_task(custom.parent)  # a folder works as well as the file
    assert skipped == 1 and len(questions) == 1
    assert questions[0].context == "Answer.\n\nexample: Why?\n - a\n - b\nanswer: "
    plain = write_task(tmp_path / "p" / "task.json", [ex], append_choices_to_input=False)
    assert parse_task(plain)[0][0].context == "\nQ: Why?\nA: "


def test_composite_task_reads_its_subtasks(tmp_path):
    root = tmp_path / "cause_and_effect"
    root.mkdir()
    (root / "task.json").write_text(json.dumps({"name": "cause_and_effect"}))
    write_task(root / "two" / "task.json", [mc(2)], example_input_prefix="")
    write_task(root / "one" / "task.json", [mc(1), mc(3)])
    questions = load_task(root)
    assert [q.choices[0] for q in questions] == ["right 1", "right 3", "right 2"]


def test_limit_subset_is_seeded_nested_and_in_file_order(tmp_path):
    path = write_task(tmp_path / "t" / "task.json", [mc(i) for i in range(50)])
    a = load_task(path, limit=10, seed=0)
    assert a == load_task(path, limit=10, seed=0)
    assert a != load_task(path, limit=10, seed=1)
    index = [int(q.choices[0].split()[1]) for q in a]
    assert index == sorted(index)
    assert set(a) <= set(load_task(path, limit=20, seed=0))
    assert len(load_task(path, limit=500)) == 50
    with pytest.raises(PruningError, match="limit"):
        load_task(path, limit=0)
    with pytest.raises(PruningError):
        subset(a, 0)


# ---------------------------------------------------------------- the sdist


def fake_sdist(path: Path) -> Path:
    """A tar.gz with the sdist's layout: every file of TASK_FILES, plus other files."""
    with tarfile.open(path, "w:gz") as tar:
        members = {"bigbench-1.0.0/setup.py": b"# not a task\n"}
        for name, files in T.TASK_FILES.items():
            for rel, member in files.items():
                body = {"name": name} if rel == "task.json" and len(files) > 1 else None
                body = body or {"name": name, "examples": [mc(i) for i in range(5)]}
                members[T.MEMBER_ROOT + member] = json.dumps(body).encode()
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture()
def sdist(tmp_path, monkeypatch):
    path = fake_sdist(tmp_path / "bigbench-1.0.0.tar.gz")
    monkeypatch.setattr(T, "SDIST_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    monkeypatch.delenv(T.SDIST_ENV, raising=False)
    monkeypatch.setenv("NMLAB_BIGBENCH_URL", (tmp_path / "unreachable").as_uri())
    return path


def test_extract_verify_and_reuse(sdist, tmp_path):
    cache = tmp_path / "cache"
    paths = ensure_tasks(["truthful_qa_mc", "cause_and_effect"], cache=cache, sdist=sdist)
    assert sdist.is_file()  # a file the user gave is never deleted
    assert paths["truthful_qa_mc"] == cache / "bigbench" / "truthful_qa_mc"
    assert len(load_task(paths["truthful_qa_mc"])) == 5
    assert len(load_task(paths["cause_and_effect"])) == 15  # three subtasks of five
    manifest = json.loads((cache / "bigbench" / "manifest.json").read_text())
    assert len(manifest["files"]) == sum(len(f) for f in T.TASK_FILES.values())
    for key, digest in manifest["files"].items():
        assert hashlib.sha256((cache / "bigbench" / key).read_bytes()).hexdigest() == digest
    # reuse: no sdist needed (the download URL is unreachable)
    assert ensure_tasks(["social_iqa"], cache=cache) == {
        "social_iqa": paths["truthful_qa_mc"].parent / "social_iqa"
    }


def test_modified_cached_file_is_caught(sdist, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    file = ensure_tasks(["winowhy"], cache=cache, sdist=sdist)["winowhy"] / "task.json"
    original = file.read_bytes()
    file.write_bytes(original.replace(b"right 0", b"wrong!!"))
    with pytest.raises(PruningError, match=T.SDIST_ENV):  # no sdist at hand: says what to do
        ensure_tasks(["winowhy"], cache=cache)
    monkeypatch.setenv(T.SDIST_ENV, str(sdist))
    ensure_tasks(["winowhy"], cache=cache)  # extracted again from the sdist
    assert file.read_bytes() == original


def test_download_is_deleted_after_extraction(sdist, tmp_path, monkeypatch):
    def fake_download(target: Path, folder: Path) -> Path:
        target.write_bytes(sdist.read_bytes())
        return target

    monkeypatch.setattr(T, "_download", fake_download)
    cache = tmp_path / "cache"
    ensure_tasks(["strategyqa"], cache=cache)
    assert not list((cache / "bigbench").rglob("*.tar.gz"))
    assert not list((cache / "bigbench").glob(".download*"))


def test_wrong_sdist_and_unknown_task(sdist, tmp_path):
    other = tmp_path / "other.tar.gz"
    other.write_bytes(b"not the sdist")
    with pytest.raises(PruningError, match="SHA-256"):
        ensure_tasks(["social_iqa"], cache=tmp_path / "c", sdist=other)
    with pytest.raises(PruningError, match="unknown task 'nope'"):
        ensure_tasks(["social_iqa", "nope"], cache=tmp_path / "c")


# ---------------------------------------------------------------- entry points


def test_run_zeroshot_bad_input(tmp_path):
    with pytest.raises(PruningError, match="unknown task"):
        run_zeroshot("smollm2", ["social_iqa", "hellaswag"], limit=5)
    with pytest.raises(PruningError, match="limit"):
        run_zeroshot("smollm2", ["social_iqa"], limit=0)
    with pytest.raises(PruningError, match="unknown model or path"):
        run_zeroshot(str(tmp_path / "missing"), ["social_iqa"], limit=5)


def test_eval_tasks_command_json(sdist, tmp_path, monkeypatch, tiny_model_dir):
    import typer
    from typer.testing import CliRunner

    from nmlab.pruning.cli import register

    monkeypatch.setenv("NMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(T.SDIST_ENV, str(sdist))
    app = typer.Typer()
    register(app)
    args = ["eval", str(tiny_model_dir), "--no-ppl", "--tasks", "social_iqa,cause_and_effect"]
    result = CliRunner().invoke(app, [*args, "--limit", "4", "-q"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])["zeroshot"]
    assert out["tasks"]["social_iqa"]["n"] == 4 and out["tasks"]["cause_and_effect"]["n"] == 4
    assert out["tasks"]["cause_and_effect"]["questions_total"] == 15
    assert 0 <= out["mean_acc_norm"] <= 1 and out["limit"] == 4
    bad = CliRunner().invoke(app, ["eval", str(tiny_model_dir), "--no-ppl", "--tasks", "nope"])
    assert bad.exit_code == 2 and "unknown task" in bad.output
