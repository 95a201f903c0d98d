"""The memory of one video job, per buffer, computed from the frame size before anything is
allocated: what the runner reserves, and what docs/video.md tabulates.

A job holds, for its whole life and whatever the film's length:

| purpose            | bytes                                                                |
| ------------------ | -------------------------------------------------------------------- |
| video_decoder      | FFmpeg's decoder (reference frames, frame threads) and one frame's   |
|                    | RGB conversion and rotation: DECODER_FIXED + DECODER_B/PX x pixels    |
| video_window       | the decoded window: batch x width x height x 3                       |
| video_colored      | the colourised window returned by `colorize`: batch x w x h x 3      |
| video_stabilizer   | previous frame's L and regional colours (6 B/px) and one frame's     |
|                    | work (104 B/px)                                                      |
| video_encoder      | libx264's state and held frames, the conversion, the audio queue     |
| video_index        | FFmpeg's sample indexes, which grow with the film: the MP4 demuxer's |
|                    | and the MP4 muxer's, INDEX_BYTES_PER_SAMPLE per frame and audio      |
|                    | packet                                                               |
| video_pipeline     | with `pipeline`: the next window and its colours, coloured while the |
|                    | previous one is stabilised and encoded: 2 x batch x width x height x 3 |

The colour work inside `colorize` (engine tensors on the device or host) is not here: the caller
that runs the engine reserves it per batch, as it does for images.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.video.encode import encoder_bytes, held_frames
from service.video.info import VideoInfo
from service.video.limits import VideoLimits
from service.video.stabilize import ChromaStabilizer

MiB = 1024 * 1024

# Measured peak RSS of decoding to RGB (bench/video_memory.py): 13-15 B/px for H.264 with one to
# three reference frames, 13 B/px for VP9. The reservation is for the worst stream a client can
# send, not the typical one: H.264 may keep 16 reference frames (1.5 B/px each at 8 bits), plus
# the frame being decoded and one per frame thread, the RGB conversion (3 B/px) and the rotation's
# copy (3 B/px): 40 B/px, about 3x what a typical stream uses.
DECODER_FIXED_BYTES = 8 * MiB
DECODER_BYTES_PER_PIXEL = 40

# The one part that grows with the film: FFmpeg's MP4 demuxer indexes every sample of the input
# when it opens it, and the MP4 muxer keeps an entry per sample of the result until it writes
# the index at the end. Measured on a million-frame file: 43 B per sample to open it, 77 B per
# sample to write it (the entry arrays grow by doubling).
INDEX_BYTES_PER_SAMPLE = 128


@dataclass(frozen=True)
class VideoMemoryPlan:
    """Bytes per buffer of one video job; `reservations` is what the runner reserves."""

    decoder: int
    window: int
    colored: int
    stabilizer: int
    encoder: int
    encoder_frames: int
    """Frames the encoder may hold (libx264's look-ahead and threads, plus one kept back)."""
    index: int = 0
    max_frames: int = 0
    """Frames the index reservation covers: the probed count plus a quarter, plus 1000 (an
    estimate from duration x rate errs by a few percent). Past it, as decoded, the container
    lied about its length and the job is refused rather than outgrow its reservation."""
    max_audio_packets: int = 0
    """The same for audio packets, as copied."""
    pipeline: int = 0
    """A second window and its colours in flight (`colorize_video(pipeline=True)`)."""

    @classmethod
    def for_video(
        cls,
        info: VideoInfo,
        batch: int,
        stabilize: bool,
        limits: VideoLimits,
        pipeline: bool = False,
    ) -> VideoMemoryPlan:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        w, h = info.width, info.height
        stabilizer = (
            ChromaStabilizer.state_bytes(w, h) + ChromaStabilizer.working_bytes(w, h)
            if stabilize
            else 0
        )
        return cls(
            decoder=DECODER_FIXED_BYTES + DECODER_BYTES_PER_PIXEL * info.pixels,
            window=batch * info.frame_bytes,
            colored=batch * info.frame_bytes,
            stabilizer=stabilizer,
            encoder=encoder_bytes(w, h, limits, info.audio_streams),
            encoder_frames=held_frames(limits),
            index=INDEX_BYTES_PER_SAMPLE
            * (_allowance(info.frames) + _allowance(info.audio_packets)),
            max_frames=_allowance(info.frames),
            max_audio_packets=_allowance(info.audio_packets),
            pipeline=2 * batch * info.frame_bytes if pipeline else 0,
        )

    @property
    def reservations(self) -> dict[str, int]:
        """purpose -> bytes, in the order they are reserved (zero-byte buffers left out)."""
        named = {
            "video_decoder": self.decoder,
            "video_window": self.window,
            "video_colored": self.colored,
            "video_stabilizer": self.stabilizer,
            "video_encoder": self.encoder,
            "video_index": self.index,
            "video_pipeline": self.pipeline,
        }
        return {purpose: nbytes for purpose, nbytes in named.items() if nbytes}

    @property
    def total(self) -> int:
        return sum(self.reservations.values())


def _allowance(count: int) -> int:
    return count + count // 4 + 1000
