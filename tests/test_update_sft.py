"""The sft updater on a config-built tiny model: the loss decreases, the checkpoint loads, LoRA merges."""

from transformers import AutoModelForCausalLM

from kdagent.recipe import LoraConfig, UpdateConfig
from kdagent.records import Provenance, SFTExample
from kdagent.update.sft import train_sft


def examples(n=8):
    prov = Provenance(round=1, teacher="t", skill="cot", domain="d", task_id="t")
    return [
        SFTExample(id=str(i), prompt=[{"role": "user", "content": f"What is {i} + 1?"}],
                   completion=[{"role": "assistant", "content": f"{i} + 1 = {i + 1}. The answer is {i + 1}."}], provenance=prov)
        for i in range(n)
    ]


def test_sft_loss_decreases_and_checkpoint_loads(tmp_path, tiny_model_dir):
    out = tmp_path / "student"
    report = train_sft(examples(), tiny_model_dir, out, UpdateConfig(learning_rate=3e-3, epochs=4, batch_size=4), 128, seed=0)
    assert report["steps"] == 8 and report["examples"] == 8
    assert report["losses"][0] > report["losses"][-1]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 2
    assert not list(tmp_path.glob(".student.*"))  # no work folder left behind


def test_sft_with_lora_saves_a_merged_checkpoint(tmp_path, tiny_model_dir):
    out = tmp_path / "student"
    report = train_sft(examples(4), tiny_model_dir, out, UpdateConfig(learning_rate=1e-2, epochs=1, batch_size=2, lora=LoraConfig(r=4, alpha=8)), 128, seed=0)
    assert report["steps"] == 2
    model = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in name for name, _ in model.named_parameters())
