"""Timestep samplers: uniform, and loss-second-moment importance sampling."""

import io

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ddpm_repro.diffusion import (
    LossSecondMomentResampler,
    UniformSampler,
    create_named_schedule_sampler,
)

from ..conftest import free_port


def test_uniform_sampler_has_unit_weights():
    t, w = UniformSampler(50).sample(1000, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and t.min() >= 0 and t.max() < 50
    assert torch.all(w == 1.0)


def test_importance_sampler_is_uniform_until_every_t_has_ten_losses():
    T = 20
    s = LossSecondMomentResampler(T)
    for _ in range(9):
        s.update_with_local_losses(torch.arange(T), torch.arange(T, dtype=torch.float64) + 1)
    s.update_with_local_losses(torch.arange(T - 1), torch.ones(T - 1))
    assert not s.warmed_up()
    assert torch.all(s.weights() == 1.0)
    _, w = s.sample(100, generator=torch.Generator().manual_seed(0))
    assert torch.all(w == 1.0)
    s.update_with_local_losses(torch.tensor([T - 1]), torch.tensor([5.0]))
    assert s.warmed_up()


def test_warm_importance_weights_follow_sqrt_of_the_second_moment():
    T = 8
    s = LossSecondMomentResampler(T, history_per_term=10, uniform_prob=0.001)
    g = torch.Generator().manual_seed(0)
    history = torch.rand(T, 12, generator=g, dtype=torch.float64) * torch.arange(1, T + 1).reshape(-1, 1)
    for k in range(12):  # two more than the history: the FIFO keeps the last ten
        s.update_with_local_losses(torch.arange(T), history[:, k])
    kept = history[:, 2:]
    expected = torch.sqrt((kept**2).mean(1))
    expected = expected / expected.sum() * 0.999 + 0.001 / T
    torch.testing.assert_close(s.weights(), expected)
    t, w = s.sample(4000, generator=g)
    torch.testing.assert_close(w, (1 / (T * expected[t])).float())
    # The importance weights keep the estimate of (1/T) sum_t L_t unbiased: E_p[w_t L_t].
    losses = torch.arange(1.0, T + 1, dtype=torch.float64)
    torch.testing.assert_close((expected * (1 / (T * expected)) * losses).sum(), losses.mean())
    freq = torch.bincount(t, minlength=T).double() / 4000
    assert torch.allclose(freq, expected, atol=0.03)


def test_sampler_state_round_trips_through_weights_only_load():
    s = LossSecondMomentResampler(6)
    s.update_with_local_losses(torch.tensor([0, 1, 1, 5]), torch.tensor([1.0, 2.0, 3.0, 4.0]))
    buffer = io.BytesIO()
    torch.save(s.state_dict(), buffer)
    buffer.seek(0)
    restored = LossSecondMomentResampler(6)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.loss_history, s.loss_history) and torch.equal(
        restored.loss_counts, s.loss_counts
    )
    with pytest.raises(ValueError, match="loss_history has shape"):
        LossSecondMomentResampler(7).load_state_dict(s.state_dict())


def test_named_samplers():
    assert isinstance(create_named_schedule_sampler("loss-second-moment", 5), LossSecondMomentResampler)
    with pytest.raises(ValueError, match="unknown timestep sampler 'importance'.*uniform"):
        create_named_schedule_sampler("importance", 5)


def _gather_worker(rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        s = LossSecondMomentResampler(4, history_per_term=2)
        # Rank 0 sees t = 0, 1; rank 1 sees t = 2, 3, 3 (different batch sizes).
        if rank == 0:
            s.update_with_local_losses(torch.tensor([0, 1]), torch.tensor([1.0, 2.0]))
        else:
            s.update_with_local_losses(torch.tensor([2, 3, 3]), torch.tensor([3.0, 4.0, 5.0]))
        results[rank] = (s.loss_history.clone(), s.loss_counts.clone())
    finally:
        dist.destroy_process_group()


def test_importance_sampler_all_gathers_losses_across_processes():
    manager = mp.Manager()
    results = manager.dict()
    mp.start_processes(_gather_worker, args=(free_port(), results), nprocs=2, start_method="spawn")
    (h0, c0), (h1, c1) = results[0], results[1]
    assert torch.equal(h0, h1) and torch.equal(c0, c1)
    assert c0.tolist() == [1, 1, 1, 2]
    assert h0[3].tolist() == [4.0, 5.0] and h0[0, 0] == 1.0
