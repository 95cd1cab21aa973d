import shutil

import pytest
import torch

from interp_jobs.engine.errors import EngineError, PermanentEngineError
from interp_jobs.engine.loading.models import load_model


def test_loaded_model_reproduces_the_saved_models_logits(saved, loaded, batch):
    with torch.inference_mode():
        expected = saved.raw(**batch).logits
        actual = loaded.model(**batch).logits
    torch.testing.assert_close(actual, expected)


def test_loaded_model_reports_family_shape_and_eval_mode(saved, loaded):
    assert loaded.family == saved.raw.config.model_type
    config = saved.raw.config
    assert (loaded.n_layers, loaded.d_model) == (config.num_hidden_layers, config.hidden_size)
    assert loaded.n_layers == 3
    assert (loaded.device, loaded.dtype) == ("cpu", "float32")
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_model_loads_in_the_requested_dtype(llama_saved):
    loaded = load_model(llama_saved.path, "hf_dir", dtype="bfloat16")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16


def test_chat_prompt_applies_the_tokenizers_template(llama_loaded, chat_template):
    assert llama_loaded.tokenizer.chat_template == chat_template
    assert llama_loaded.chat_prompt("hello") == "<|user|> hello <|assistant|>"


def test_chat_prompt_falls_back_to_plain_text_without_a_template(gpt2_saved):
    loaded = load_model(gpt2_saved.path, "hf_dir")
    assert loaded.chat_prompt("what is the capital") == "what is the capital"


def test_encode_pads_a_batch_and_puts_it_on_the_device(llama_loaded):
    enc = llama_loaded.encode(["the cat sat on the mat", "hello"], chat=True)
    assert enc["input_ids"].shape == enc["attention_mask"].shape
    assert enc["attention_mask"].sum(dim=1).tolist() == [8, 3]


def test_unsupported_architecture_is_refused_by_name(tmp_path, make_saved_model):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    def build(vocab_size):
        return GPTNeoXForCausalLM(
            GPTNeoXConfig(
                vocab_size=vocab_size,
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=4,
                intermediate_size=64,
            )
        )

    make_saved_model(tmp_path, build)
    with pytest.raises(PermanentEngineError, match=r"'gpt_neox'.*llama.*gpt2"):
        load_model(tmp_path, "hf_dir")


def test_encoder_only_model_is_refused(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(
            vocab_size=20,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=64,
        )
    ).save_pretrained(tmp_path)
    with pytest.raises(PermanentEngineError, match="Unsupported model architecture 'bert'"):
        load_model(tmp_path, "hf_dir")


def test_missing_directory_says_what_to_register(tmp_path):
    with pytest.raises(PermanentEngineError, match=r"does not exist.*config.json"):
        load_model(tmp_path / "nope", "hf_dir")


def test_directory_without_config_is_refused(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(PermanentEngineError, match=r"has no config.json"):
        load_model(tmp_path, "hf_dir")


def test_corrupt_weights_are_a_permanent_error(llama_saved, tmp_path):
    shutil.copytree(llama_saved.path, tmp_path, dirs_exist_ok=True)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(PermanentEngineError, match="Could not load the model weights"):
        load_model(tmp_path, "hf_dir")


def test_unknown_format_dtype_and_device_are_refused(llama_saved):
    with pytest.raises(PermanentEngineError, match="Unknown model format 'onnx'"):
        load_model(llama_saved.path, "onnx")
    with pytest.raises(PermanentEngineError, match="Unsupported dtype 'int3'"):
        load_model(llama_saved.path, "hf_dir", dtype="int3")
    with pytest.raises(PermanentEngineError, match="Unsupported device 'tpu'"):
        load_model(llama_saved.path, "hf_dir", device="tpu")


def test_gguf_file_loads_through_the_gguf_loader_with_the_same_logits(llama_gguf):
    loaded = load_model(llama_gguf.path, "gguf")
    assert (loaded.family, loaded.n_layers, loaded.d_model) == ("llama", 3, 32)
    enc = loaded.encode("the cat sat on the mat")
    assert enc["input_ids"].shape[1] > 1  # the BPE carried inside the file tokenizes
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(**enc).logits, llama_gguf.raw(**enc).logits)


def test_missing_gguf_file_is_refused(tmp_path):
    with pytest.raises(PermanentEngineError, match=r"GGUF file .* does not exist"):
        load_model(tmp_path / "model.gguf", "gguf")


def test_non_gguf_file_is_refused(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(PermanentEngineError, match="is not a GGUF file"):
        load_model(tmp_path / "model.gguf", "gguf")


def test_truncated_gguf_is_a_permanent_error(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 8)
    with pytest.raises(PermanentEngineError, match="Could not load"):
        load_model(tmp_path / "model.gguf", "gguf")


def test_permanent_errors_are_engine_errors():
    assert issubclass(PermanentEngineError, EngineError)
