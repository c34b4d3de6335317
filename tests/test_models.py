import torch
import torch.nn.functional as F

from grokprobe.data import modular_arithmetic
from grokprobe.models import GrokTransformer, GrokTransformerConfig

SMALL = GrokTransformerConfig(vocab_size=50, d_model=16, n_layers=2, n_heads=4, d_ff=32)


def test_shapes_and_phi_is_the_output_layer_input():
    m = GrokTransformer(seeds=[1, 2, 3], config=SMALL)
    tokens = torch.randint(0, 50, (3, 5, 6))
    logits, phi = m(tokens)
    assert logits.shape == (3, 5, 2, 50) and phi.shape == (3, 5, 2, 16)
    for s in range(3):
        torch.testing.assert_close(logits[s], phi[s] @ m.output_weight()[s].T)


def test_paper_shape_parameter_count():
    m = GrokTransformer(seeds=[0])
    n = sum(p.numel() for p in m.parameters())
    # embed + unembed 2*239*128, per layer qkv 3*128^2 + out 128^2 + ffn 2*128*512 + 2 LN (2*128 each)
    per_layer = 4 * 128 * 128 + 2 * 128 * 512 + 4 * 128
    assert n == 2 * 239 * 128 + 2 * per_layer


def test_batched_copy_equals_a_model_built_for_that_seed_alone():
    batched = GrokTransformer(seeds=[7, 42], config=SMALL)
    alone = GrokTransformer(seeds=[42], config=SMALL)
    for k, v in alone.copy_state(0).items():
        torch.testing.assert_close(batched.copy_state(1)[k], v, rtol=0, atol=0)


def test_causal_mask_later_tokens_do_not_change_earlier_outputs():
    m = GrokTransformer(seeds=[0], config=SMALL)
    t = torch.randint(0, 50, (1, 4, 6))
    t2 = t.clone()
    t2[..., 5] = (t2[..., 5] + 1) % 50  # change only the last input token
    l1, _ = m(t)
    l2, _ = m(t2)
    torch.testing.assert_close(l1[:, :, 0], l2[:, :, 0])  # the "=" position cannot see position 5
    assert not torch.allclose(l1[:, :, 1], l2[:, :, 1])


def test_restricted_last_block_matches_full_computation():
    m = GrokTransformer(seeds=[0, 1], config=SMALL)
    t = torch.randint(0, 50, (2, 8, 6))
    full, phi_full = m(t, positions=range(6))
    part, phi_part = m(t, positions=(4, 5))
    torch.testing.assert_close(part, full[:, :, 4:6])
    torch.testing.assert_close(phi_part, phi_full[:, :, 4:6])


def test_gradients_do_not_mix_between_seeds():
    m = GrokTransformer(seeds=[0, 1], config=SMALL)
    t = torch.randint(0, 50, (2, 8, 6))
    logits, _ = m(t)
    logits[0].sum().backward()  # a loss of copy 0 only
    for p in m.parameters():
        if p.grad is not None:
            assert p.grad[1].abs().max() == 0


def test_data_fits_the_model():
    d = modular_arithmetic(p=13)
    m = GrokTransformer(seeds=[0], config=GrokTransformerConfig(vocab_size=d.vocab_size, d_model=16, d_ff=32))
    logits, _ = m(d.train.inputs[None, :10])
    loss = F.cross_entropy(logits.reshape(-1, d.vocab_size), d.train.targets[:10].reshape(-1))
    assert torch.isfinite(loss)


def test_shared_prefix_forward_equals_the_plain_forward_values_and_gradients():
    d = modular_arithmetic(p=13)
    cfg = GrokTransformerConfig(vocab_size=d.vocab_size, d_model=16, n_heads=4, d_ff=32)
    m = GrokTransformer(seeds=[3, 4], config=cfg).double()
    idx = torch.stack([torch.randperm(len(d.train))[:20] for _ in range(2)])  # each copy its own batch
    plain, phi_plain = m(d.train.inputs[idx])
    shared, phi_shared = m.forward_prefixed(d.prefixes, d.train.prefix_index[idx], d.train.suffix[idx])
    torch.testing.assert_close(shared, plain)
    torch.testing.assert_close(phi_shared, phi_plain)
    grads = torch.autograd.grad(shared.square().sum(), list(m.parameters()))
    ref = torch.autograd.grad(plain.square().sum(), list(m.parameters()))
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r)
