"""A recipe: pydantic models, one per concept, `extra="forbid"`, a description on every field.

Reading one from YAML, `--set` overrides, checking its names against the plugins and masking its secrets are in
`kdagent/recipe_io.py`.
"""

from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StudentConfig(_Config):
    model: str = Field(
        "smollm2-135m-instruct",
        description="The student: a model alias, a local Hugging Face folder, or a Hub id (org/name) in the local Hugging Face cache.",
    )
    max_length: int = Field(
        512, ge=16, description="Longest tokenised training example (prompt + reply); longer ones are truncated."
    )


class TeacherConfig(_Config):
    kind: str = Field(
        "self",
        description="A registered teacher kind: 'self' (the current student), 'hf' (a local model), 'openai' (an OpenAI-compatible endpoint), 'langchain' (a chat model a plugin registers, named by `model`), or one a plugin adds.",
    )
    model: str | None = Field(
        None,
        description="The teacher model: an alias, local folder or cached Hub id for 'hf', the served model name for 'openai', a registered chat model for 'langchain'.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="The teacher kind's own options, validated by the model the kind declares (`options_model`); "
        "a kind that declares none, as the built-in ones, takes none.",
    )
    samples: int = Field(
        4,
        ge=0,
        le=64,
        description="Answers sampled per task; 0 asks the teacher nothing, so each task teaches its reference answer "
        "(needs feedback.fallback_to_reference): for labelled data, where a sample could only repeat the label.",
    )
    temperature: float = Field(
        0.7, ge=0.0, le=2.0, description="Sampling temperature; 0 means greedy (then samples must be 1)."
    )
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    max_new_tokens: int = Field(128, ge=1, le=4096, description="Longest reply, in tokens.")
    batch_size: int = Field(16, ge=1, description="Prompts per generation batch (each yields `samples` sequences).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="For 'self' and 'hf': the weights' dtype while the teacher samples and scores; 'auto' is bfloat16 on a GPU and "
        "float32 on the CPU. On CPUs with bf16 instructions 'bfloat16' samples faster, with bf16's rounding.",
    )
    backend: Literal["kdagent", "hf"] = Field(
        "kdagent",
        description="For 'self' and 'hf': how replies are decoded: 'kdagent' (the fast engine: one prefill for the samples of a prompt, "
        "finished rows dropped) or 'hf' (transformers' model.generate, the plain path). Greedy replies are the same.",
    )
    base_url: str | list[str] | None = Field(
        None,
        description="For 'openai': the endpoint, e.g. http://127.0.0.1:8000/v1, or a list of endpoints serving the same model: a pool, "
        "load-balanced with `concurrency` requests in flight on each; an endpoint that fails is taken out of rotation, "
        "probed, and brought back, and its requests go to the others.",
        examples=["http://127.0.0.1:8000/v1", ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"]],
    )
    api_key_env: str | None = Field(
        None,
        description="For 'openai': the name of the environment variable that holds the API key (never the key itself).",
    )
    concurrency: int = Field(
        8, ge=1, le=1024, description="For API teachers: requests in flight at most (for a pool, on each endpoint)."
    )
    timeout_s: float = Field(120.0, gt=0, description="For API teachers: deadline of one request, in seconds.")
    max_retries: int = Field(
        3,
        ge=0,
        le=20,
        description="For API teachers: retries of a failed request, with exponential backoff; a pool also tries each of its endpoints once.",
    )

    @field_validator("base_url")
    @classmethod
    def _distinct_endpoints(cls, value):
        if isinstance(value, list):
            if not value or any(not url.strip() for url in value):
                raise ValueError("a pool lists one endpoint URL or more, none empty")
            if len(set(value)) != len(value):
                raise ValueError("a pool lists each endpoint once")
        return value


class DomainConfig(_Config):
    name: str = Field(
        "arithmetic", description="A registered domain: it brings the corpus, seed tasks and held-out tasks."
    )
    seed_tasks: int = Field(48, ge=1, description="Seed tasks taken from the domain per round.")
    eval_tasks: int = Field(
        40, ge=1, description="Held-out tasks the student is evaluated on before and after each round."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Domain-specific options, passed to the domain as keyword arguments."
    )


class SkillConfig(_Config):
    name: str = Field(description="A registered skill, such as 'cot'.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Skill-specific options, passed to the skill as keyword arguments."
    )


class RetrievalConfig(_Config):
    enabled: bool = Field(
        True, description="Index the domain corpus into a persistent store and ground each task with passages."
    )
    store: str = Field(
        "chroma",
        description="The store kind holding the passages (and the earlier tasks that expansion checks against): "
        "a name registered through kdagent_register_stores; `kdagent plugins` lists them.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="The store kind's own options, validated by its options model."
    )
    embedder: str = Field("minilm-l6", description="The sentence embedder: a model alias or a local folder.")
    top_k: int = Field(2, ge=1, le=20, description="Passages retrieved per task.")
    domain_corpus: bool = Field(True, description="Index the domain's own corpus.")
    corpus_dir: str | None = Field(
        None, description="A folder of .txt, .md and .jsonl files (a 'text' field per record) to index as well."
    )
    chunk_chars: int = Field(
        800,
        ge=50,
        description="Corpus documents are split into chunks of at most this many characters, on paragraph breaks.",
    )
    server: str | None = Field(
        None,
        description="A Chroma server (`chroma run --host H --port P --path FOLDER`) to hold the store instead of a folder in the run "
        "directory, as http://H:P; the same content-hash ids and the same one-writer rule. Null: the embedded store.",
        examples=["http://127.0.0.1:8000"],
    )

    @field_validator("server")
    @classmethod
    def _server_url(cls, value):
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("a Chroma server is an http(s)://host:port URL")
        return value


class ExpansionConfig(_Config):
    method: Literal["self_instruct", "evol_instruct"] = Field(
        "self_instruct",
        description="Self-instruct (new tasks from few-shot seeds) or evol-instruct (seeds rewritten deeper, more concrete, with more steps).",
    )
    n_new: int = Field(
        8,
        ge=1,
        description="Candidate tasks generated per round: self-instruct writes this many; evol-instruct rewrites this many seeds, in turn.",
    )
    novelty_threshold: float = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="A new task whose embedding similarity to an existing task reaches this is dropped.",
    )


class SynthesisConfig(_Config):
    expansion: ExpansionConfig | None = Field(
        None, description="Expand the seed tasks with new ones written by the teacher; omitted means no expansion."
    )
    train_with_passages: bool = Field(
        False,
        description="Keep the retrieved passages in the training prompt. False distils the grounded answers into the bare prompt, "
        "as the student will see it at evaluation.",
    )


class FeedbackConfig(_Config):
    verifier: str = Field(
        "reference",
        description="How samples are checked, a registered verifier (`kdagent plugins` lists them): 'reference' runs the skill's verifier "
        "against the task's reference answer; 'judge' asks the teacher to grade each reply against a rubric; 'self_consistency' keeps "
        "replies that agree with the majority answer; or one a plugin adds.",
        examples=["reference", "judge", "self_consistency"],
    )
    unreferenced: str = Field(
        "self_consistency",
        description="How tasks without a reference answer (such as expanded tasks) are checked when the verifier needs one "
        "('reference'): a registered verifier that needs none ('self_consistency', 'judge', or one a plugin adds), or 'drop'.",
        examples=["self_consistency", "judge", "drop"],
    )
    min_agreement: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="For 'self_consistency': the share of a task's samples that its majority answer must hold for the replies "
        "reaching it to pass. Where the round also has choice tasks with reference answers, a voted label must also have been "
        "right this share of the time on them (the teacher's confident votes checked against the gold labels).",
    )
    rubric: str | None = Field(
        None,
        description="The judge's rubric; omitted means the domain's, else a default (helpful, honest, harmless, correct).",
    )
    judge_attempts: int = Field(
        3,
        ge=1,
        le=10,
        description="Tries per reply when the judge's output cannot be parsed; still malformed after them, the reply is recorded as failed, never a pass.",
    )
    judge_score: Literal["expected", "verdict"] = Field(
        "expected",
        description="How a judge decides: 'expected' reads the verdict off a local teacher's (self, hf) token probabilities, "
        "nothing decoded: the score is the probability-weighted mean of 1..10 (G-Eval) and passed is P(true) > 1/2; an API teacher "
        "writes its verdict either way. 'verdict' has the judge write it and takes the integer written.",
    )
    faithfulness: Literal["off", "overlap", "judge"] = Field(
        "off",
        description="Drop grounded answers whose citations do not support them: 'overlap' needs a cited passage holding most of the reply's content words; 'judge' asks the teacher.",
    )
    min_overlap: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="For faithfulness 'overlap': the share of the reply's content words that the cited passages must hold.",
    )
    reject_copies: int | None = Field(
        12,
        ge=4,
        le=200,
        description="A sample that repeats this many consecutive words of a retrieved passage verbatim (words its own task's text "
        "does not hold) fails its check as copied reference material (feedback counts: dropped.copied_passage); null turns it off.",
    )
    preferences: bool = Field(
        False,
        description="Also rank each task's samples into a preference pair (best against worst), written to preferences.jsonl.",
    )
    pairs: Literal["ranked", "spin"] = Field(
        "ranked",
        description="How preference pairs are made: 'ranked' (best against worst sample by score) or 'spin' (the task's reference solution, "
        "or a sample that passed, chosen against a sample that failed; self-play fine-tuning).",
    )
    min_margin: float = Field(0.0, ge=0.0, description="A preference pair needs a score margin above this.")
    fallback_to_reference: bool = Field(
        False,
        description="When no sample of a task passes, train on the task's reference solution instead (STaR-style rationalisation). "
        "Only tasks that carry a worked solution can use it.",
    )


class CurationConfig(_Config):
    max_per_task: int = Field(1, ge=1, description="Training examples kept per task among the samples that passed.")
    near_dup_threshold: float | None = Field(
        0.85,
        gt=0.0,
        le=1.0,
        description="MinHash similarity at which an example counts as a near-duplicate of an earlier one (both prompt and reply); null turns it off.",
    )
    decontam_ngram: int = Field(
        13,
        ge=3,
        le=50,
        description="Seed tasks and examples that share a word n-gram of this length (13, as GPT-3's decontamination) with any evaluation item are dropped; items shorter than this are matched whole.",
    )
    min_reply_chars: int = Field(
        1, ge=1, description="Replies shorter than this (after stripping) are never training examples."
    )
    max_reply_chars: int = Field(8000, ge=1, description="Replies longer than this are dropped.")
    max_repeat_ratio: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Replies whose share of repeated word 3-grams exceeds this are dropped as degenerate.",
    )
    too_long: Literal["truncate", "drop"] = Field(
        "truncate",
        description="Training examples longer than student.max_length tokens: 'truncate' keeps them, cut at max_length by the trainer; "
        "'drop' leaves them out. Either way they are counted (sft.counts.json: truncated_to_max_length, or dropped.too_long); "
        "an example whose prompt alone fills max_length is always left out (dropped.prompt_too_long).",
    )
    balance: Literal["upsample", "downsample", "off"] = Field(
        "upsample",
        description="Label-balanced selection of the SFT examples of choice tasks, so that a classifier cannot learn one label for everything: "
        "'upsample' repeats the examples of the rarer labels (in turn) until every label has as many as the most frequent; 'downsample' keeps "
        "as many of each label as the rarest has; 'off' keeps them as they are. Examples of other kinds are never touched. The labels in and "
        "out are counted in sft.counts.json (labels).",
    )


class LoraConfig(_Config):
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="LoRA dropout.")
    target_modules: list[str] | str = Field("all-linear", description="Modules to adapt, as peft takes them.")


UpdateMethod = str  # a registered updater's name, or 'none' (kdagent/update/updater.py)


class DPOOptions(_Config):
    beta: float = Field(0.1, gt=0.0, description="DPO's beta: how far the student may move from the reference model.")
    loss_type: str = Field(
        "sigmoid", description="One of the loss variants TRL's DPOTrainer offers (sigmoid, ipo, hinge, ...)."
    )
    learning_rate: float | None = Field(
        None,
        gt=0.0,
        description="DPO's own peak learning rate; omitted: update.learning_rate. DPO usually wants a far smaller one "
        "than SFT (TRL's default is 1e-6), which matters when update.method is [sft, dpo].",
    )


class DistillOptions(_Config):
    divergence: Literal["forward_kl", "reverse_kl", "jsd"] = Field(
        "jsd", description="Token-level divergence between teacher and student distributions."
    )
    beta: float = Field(0.5, ge=0.0, le=1.0, description="For 'jsd': the generalised JSD's interpolation weight.")
    lmbda: float = Field(0.5, ge=0.0, le=1.0, description="Share of on-policy (student-generated) sequences.")
    temperature: float = Field(
        1.0, gt=0.0, description="Temperature applied to both distributions (and to on-policy sampling)."
    )
    max_completion_length: int = Field(64, ge=1, description="Longest sequence the student generates on-policy.")


class GRPOOptions(_Config):
    num_generations: int = Field(
        4, ge=2, description="Completions sampled per prompt (the group whose rewards are compared)."
    )
    max_completion_length: int = Field(64, ge=1, description="Longest completion, in tokens.")
    temperature: float = Field(
        1.0, gt=0.0, description="Sampling temperature of the group's completions (TRL's default, 1.0)."
    )
    beta: float = Field(
        0.0, ge=0.0, description="KL penalty against the reference model (0 turns it off, as TRL's default)."
    )
    judge_weight: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of the reward that comes from the teacher as judge; the rest is the skill's verifier.",
    )


class LauncherConfig(_Config):
    kind: Literal["accelerate"] = Field(
        "accelerate",
        description="'accelerate': the update stage runs under `accelerate launch` (kdagent/update/launch.py).",
    )
    num_processes: int | None = Field(
        None,
        ge=1,
        description="Training processes (one a GPU; without GPUs, CPU processes joined by gloo). Omitted: the config file's, else 1.",
    )
    config_file: str | None = Field(
        None,
        description="An accelerate config file (`accelerate config` writes one), passed to `accelerate launch --config_file`; omitted: "
        "one machine, DDP over `num_processes` processes.",
    )


class UpdateConfig(_Config):
    method: UpdateMethod | list[UpdateMethod] = Field(
        "sft",
        description="How the student learns, a registered updater (`kdagent plugins` lists them): 'sft' (TRL SFTTrainer on sft.jsonl), "
        "'dpo' (DPOTrainer on preferences.jsonl), 'distill' (white-box token-level distillation from a local teacher other than the student, e.g. 'hf': TRL's "
        "DistillationTrainer when update.distill.lmbda is 1, its experimental GKDTrainer otherwise), 'grpo' (GRPOTrainer with the "
        "skill's verifier as reward), one a plugin adds, 'none' (only build the datasets), or a list run in order within the round, "
        "e.g. [sft, dpo].",
        examples=["sft", ["sft", "dpo"]],
    )
    learning_rate: float = Field(5e-5, gt=0.0, description="Peak learning rate.")
    epochs: float = Field(2.0, gt=0.0, description="Passes over the round's training examples.")
    batch_size: int = Field(
        8,
        ge=1,
        description="Examples per step (before gradient accumulation); under update.launcher, divided among the processes.",
    )
    gradient_accumulation_steps: int = Field(1, ge=1, description="Steps accumulated per optimiser update.")
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Share of steps spent warming up the learning rate.")
    checkpoint_steps: int = Field(
        50,
        ge=1,
        description="Save a resumable Trainer checkpoint every this many steps; an interrupted update resumes from the last complete one.",
    )
    report_to: str | list[str] = Field(
        default_factory=list,
        description="Experiment trackers the trainer reports to, as transformers' `report_to` takes them (e.g. tensorboard, wandb, "
        "trackio, mlflow; the tracker's package must be installed). TensorBoard writes under round-NN/tensorboard/. Empty: none.",
    )
    lora: LoraConfig | None = Field(
        None, description="Train a LoRA adapter (peft) instead of all weights; omitted means full fine-tuning."
    )
    save_dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="The dtype of the saved student's weights (training keeps fp32 master weights either way). 'bfloat16' halves "
        "the size; kdagent loads such a student back into fp32 to train the next round and to run on the CPU, but the rounding can change "
        "greedy replies, so later scores are not those of an fp32 run.",
    )
    launcher: LauncherConfig | None = Field(
        None,
        description="Train on several processes under `accelerate launch` (the loop's other stages stay in one process); each of N "
        "processes trains on batch_size / N examples a step, so the batches are a 1-process run's. Omitted: training runs in the run's process.",
    )
    dpo: DPOOptions = Field(default_factory=DPOOptions, description="Options of the 'dpo' method.")
    distill: DistillOptions = Field(default_factory=DistillOptions, description="Options of the 'distill' method.")
    grpo: GRPOOptions = Field(default_factory=GRPOOptions, description="Options of the 'grpo' method.")
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Options of the other updaters, by name (e.g. {kto: {beta: 0.2}}); each updater validates its own. "
        "The built-ins' options go under update.dpo, update.distill and update.grpo.",
    )

    def methods(self) -> list[str]:
        """The methods to run in order ('none' removed)."""
        items = self.method if isinstance(self.method, list) else [self.method]
        return [m for m in items if m != "none"]


class GateConfig(_Config):
    max_regression: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="A round whose score on any held-out set (the domain's, each skill's) falls more than this below the best student so far on it fails the gate.",
    )
    metric: Literal["auto", "accuracy", "macro_f1"] = Field(
        "auto",
        description="The score the gate compares: 'auto' is macro-F1 on a set of choice tasks and accuracy otherwise.",
    )
    max_label_share: float = Field(
        0.95,
        gt=0.0,
        le=1.0,
        description="A round whose predictions on a set of choice tasks give one label this share of the items or more fails the gate as "
        "collapsed (a label prior, not the task), unless the gold answers are as lopsided.",
    )


class EvaluationConfig(_Config):
    gate: GateConfig | None = Field(
        None,
        description="Keep the previous student when a round regresses; omitted means every round's student is kept.",
    )
    data: str | None = Field(
        None, description="A JSONL file in the evaluation format to use instead of the domain's held-out tasks."
    )
    skill_tasks: int = Field(
        16,
        ge=0,
        le=1000,
        description="Tasks of each listed skill's own held-out set (at most this many; Skill.eval_tasks) scored beside the domain's, in eval.skills; 0 turns them off.",
    )
    max_new_tokens: int = Field(128, ge=1, description="Longest reply when the model answers freely.")
    batch_size: int = Field(16, ge=1, description="Tasks per evaluation batch.")
    backend: Literal["kdagent", "hf"] = Field(
        "kdagent", description="How free answers are decoded, as teacher.backend ('hf' is model.generate)."
    )
    unseen_phrasing: bool = Field(
        False,
        description="Also score the domain's held-out tasks under an instruction phrasing that no training example used (the evaluation's "
        "reserved phrasing, kdagent/phrasings.py), in eval.unseen_phrasing: a gain that holds only under the training phrasing is a format, not the task.",
    )
    bootstrap: int = Field(
        1000,
        ge=0,
        le=100000,
        description="Bootstrap resamples for the 95% intervals of every score (eval.ci); 0 turns them off.",
    )
    cross_check: list[DomainConfig] = Field(
        default_factory=list,
        description="Other domains whose held-out sets (each domain's eval_tasks items) are scored beside this one's, in eval.domains; "
        "the gate checks them too, so that a round cannot buy its gain with a regression elsewhere. Their items are kept out of training.",
    )


class LoopConfig(_Config):
    rounds: int = Field(1, ge=1, le=100, description="Rounds of elicit, feedback, curate, update and evaluate.")
    failure_mining: Literal["off", "evaluation", "training"] = Field(
        "off",
        description="Seed each later round's expansion with failures (needs synthesis.expansion): 'evaluation', the domain's "
        "held-out tasks that the round's starting student got wrong in its last evaluation (true means this); 'training', "
        "the last round's training tasks that no sample solved (held-out items never reach the expansion prompt).",
    )

    @field_validator("failure_mining", mode="before")
    @classmethod
    def _failure_mining_flag(cls, value):
        return {True: "evaluation", False: "off"}.get(value, value) if isinstance(value, bool) else value


class Recipe(_Config):
    name: str = Field(description="The run's name; the default run directory is runs/<name>.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed for task sampling, generation and training.")
    student: StudentConfig = Field(default_factory=StudentConfig, description="The model being improved.")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="Who answers the tasks.")
    domain: DomainConfig = Field(
        default_factory=DomainConfig, description="Where tasks, corpus and held-out tasks come from."
    )
    skills: list[SkillConfig] = Field(
        default_factory=lambda: [SkillConfig(name="cot")],
        min_length=1,
        description="Skills, as names or {name, options}. Tasks are elicited, checked and taught with the first one.",
    )
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig, description="Corpus indexing and grounding.")
    synthesis: SynthesisConfig = Field(
        default_factory=SynthesisConfig, description="How grounded prompts become training prompts."
    )
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig, description="How samples are judged.")
    curation: CurationConfig = Field(
        default_factory=CurationConfig, description="Which judged samples become training examples."
    )
    update: UpdateConfig = Field(default_factory=UpdateConfig, description="How the student is trained on them.")
    evaluation: EvaluationConfig = Field(
        default_factory=EvaluationConfig, description="How the student is scored before and after each round."
    )
    loop: LoopConfig = Field(default_factory=LoopConfig, description="How many rounds.")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if value in ("", ".", "..") or any(c in value for c in "/\\\0"):
            raise ValueError(
                f"{value!r} is not a plain folder name: a run name cannot leave runs/ (no '/', '..' or absolute path)"
            )
        return value

    @field_validator("skills", mode="before")
    @classmethod
    def _names_to_configs(cls, value):
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value


def submodel(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    """The pydantic model of field `name` of `model`, through optionals and lists; None for a plain value."""
    field = model.model_fields.get(name)
    stack = [field.annotation] if field else []
    while stack:
        kind = stack.pop()
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return kind
        stack.extend(get_args(kind))
    return None


def recipe_json_schema() -> dict:
    """The JSON Schema of a recipe file as `load_recipe` reads it, every field with its description (for
    `kdagent schema` and editors' YAML language servers): `name` may be left out (it is the file's stem), a
    skill may be a bare name, and loop.failure_mining also takes true and false."""
    schema = Recipe.model_json_schema()
    schema["required"] = [r for r in schema.get("required", []) if r != "name"]
    if not schema["required"]:
        del schema["required"]
    skills = schema["properties"]["skills"]
    skills["items"] = {"anyOf": [{"type": "string", "description": "A registered skill's name."}, skills["items"]]}
    mining = schema["$defs"]["LoopConfig"]["properties"]["failure_mining"]
    mining["type"], mining["enum"] = ["string", "boolean"], [*mining["enum"], True, False]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "kdagent recipe",
        "description": "A kdagent recipe: the student, the teacher, the domain, the skills, and how each round "
        "elicits, judges, curates, trains and evaluates. `kdagent validate` prints one with every default.",
    }
