import pytest
import torch

from grokprobe import data

EXPECTED = {
    "+": lambda a, b, p: (a + b) % p,
    "-": lambda a, b, p: (a - b) % p,
    "*": lambda a, b, p: (a * b) % p,
    "x^2+y^2": lambda a, b, p: (a**2 + b**2) % p,
    "x^2+xy+y^2": lambda a, b, p: (a**2 + a * b + b**2) % p,
    "x^3+xy": lambda a, b, p: (a**3 + a * b) % p,
}


@pytest.mark.parametrize("op", list(data.OPERATORS))
def test_every_equation_is_correct(op):
    p = 11
    d = data.modular_arithmetic(p=p, op=op, train_frac=0.5)
    for split in (d.train, d.val):
        for a, b, c in zip(split.a.tolist(), split.b.tolist(), split.answer.tolist()):
            if op == "/":
                assert b != 0 and (c * b) % p == a  # c = a / b  <=>  c * b = a
            else:
                assert c == EXPECTED[op](a, b, p)
    n = p * (p - 1) if op == "/" else p * p
    pairs = {(a, b) for s in (d.train, d.val) for a, b in zip(s.a.tolist(), s.b.tolist())}
    assert len(pairs) == len(d.train) + len(d.val) == n  # every equation once, no overlap


def test_tokens_layout_and_paper_split_sizes():
    d = data.modular_arithmetic()
    assert (len(d.train), len(d.val)) == (4704, 4705)  # round(0.5 * 9409) = 4704 (SPEC §4 E1)
    assert d.vocab_size == 239
    t = d.train.tokens
    assert t.shape == (4704, 7)
    assert (t[:, 0] == data.EOS).all() and (t[:, 4] == data.EQ).all() and (t[:, 6] == data.EOS).all()
    assert (t[:, 1] == d.train.a + 22).all() and (t[:, 5] == d.train.answer + 22).all()
    assert (d.train.inputs == t[:, :6]).all() and (d.train.targets == t[:, 5:]).all()


def test_split_depends_only_on_split_seed():
    a = data.modular_arithmetic(p=13, split_seed=0)
    b = data.modular_arithmetic(p=13, split_seed=0)
    c = data.modular_arithmetic(p=13, split_seed=1)
    assert torch.equal(a.train.tokens, b.train.tokens)
    assert not torch.equal(a.train.tokens, c.train.tokens)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(op="%"), ["unknown operator", "x^2+y^2"]),
        (dict(p=12, op="/"), ["prime", "12"]),
        (dict(train_frac=1.0), ["(0, 1)"]),
        (dict(train_frac=0.0), ["(0, 1)"]),
        (dict(p=1), ["p must be"]),
    ],
)
def test_bad_arguments_name_the_valid_choices(kwargs, words):
    with pytest.raises(ValueError) as e:
        data.modular_arithmetic(**kwargs)
    for w in words:
        assert w in str(e.value)
