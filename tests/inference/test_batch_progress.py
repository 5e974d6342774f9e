"""The batch's progress bar says what it counts (under torchrun: rank 0's share)."""

from __future__ import annotations

from mcgenref.inference.batch import progress_label


def test_single_process_label() -> None:
    assert progress_label(7, 7, 1) == "segmenting"


def test_torchrun_label_says_it_is_rank_0s_share() -> None:
    # 10 images to do on 4 ranks: rank 0 takes todo[0::4], i.e. 3 of them
    todo = list(range(10))
    mine = todo[0::4]
    assert progress_label(len(mine), len(todo), 4) == \
        "segmenting (rank 0's share: 3 of 10 images, 4 ranks)"
