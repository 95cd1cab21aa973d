"""Which words of a shipped prompt family a tokenizer would split (validation needs them whole)."""

from interp_jobs.engine.loading.prompt_families import load_family, multi_token_words


class _WordsOf:
    """A tokenizer that keeps the given words whole and splits everything else in two."""

    def __init__(self, whole: set[str]):
        self.whole = whole

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [1] if text in self.whole else [1, 2]


def test_a_tokenizer_that_keeps_every_target_and_entity_whole_fits_the_family():
    family = load_family("two-hop-capitals-v1")
    words = {w for p in family.prompts for w in (p.target, p.entity)}
    assert multi_token_words(_WordsOf(words), "two-hop-capitals-v1") == []


def test_the_words_a_tokenizer_splits_are_named():
    family = load_family("capitals-v1")
    targets = {p.target for p in family.prompts}
    assert multi_token_words(_WordsOf(targets - {" Paris"}), "capitals-v1") == [" Paris"]
    # subjects are spans, not single tokens: split as they are here, they do not count
    assert multi_token_words(_WordsOf(targets), "capitals-v1") == []
