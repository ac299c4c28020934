"""Phase 4: rotation fan-out, one Secret shared by N LLMs updated."""

from __future__ import annotations

import statistics
import time
from typing import cast

from bench.kube import CREDENTIALS_LABELS, LLMWatch, llm_body, secret_body
from bench.phases.base import PhaseBase
from bench.results import RotationResult, RotationRound
from bench.sizes import BenchError


class RotationPhase(PhaseBase):
    def rotation(self) -> RotationResult:
        s, stack = self.sizes, self.stack
        assert stack.emu is not None
        ns = self._namespace("rot")
        names = [f"rot-{i:04d}" for i in range(s.rotation)]
        self.kube.create_secrets(ns, [secret_body("shared", {"api-key": "rotation-0"}, CREDENTIALS_LABELS)])
        stack.start_operator("rotation+latency")  # the latency phase uses it too, once it is idle again
        watch = LLMWatch(self.kube, ns)
        rounds: list[RotationRound] = []
        try:
            w = self._window()
            self.kube.create_llms(ns, [llm_body(ns, x, secret="shared") for x in names])
            watch.wait_ready(names, s.timeout)
            self._settle()
            self._close(w)
            self.created += len(names)
            ids = {watch.items[x].llm_id for x in names}
            for r in range(1, s.rotation_runs + 1):
                before = {
                    rec["llmId"]: rec["credentialsFingerprint"] for rec in stack.emu.records() if rec["llmId"] in ids
                }
                w = self._window()
                t_epoch = time.time()
                since_ms = int(t_epoch * 1000) - 1
                self.kube.replace_secret_data(ns, "shared", {"api-key": f"rotation-{r}"})
                deadline = time.monotonic() + s.timeout
                while True:
                    puts = [
                        e
                        for e in stack.registry_log(since_ms)
                        if e["method"] == "PUT" and e["path"].rsplit("/", 1)[1] in ids and 200 <= e["status"] < 300
                    ]
                    if {e["path"].rsplit("/", 1)[1] for e in puts} >= ids:
                        break
                    if time.monotonic() > deadline:
                        raise BenchError(f"rotation {r}: {len(puts)} of {len(ids)} entries updated")
                    time.sleep(0.1)
                rotate_s = max(e["ts"] for e in puts) / 1000 - t_epoch
                after = {
                    rec["llmId"]: rec["credentialsFingerprint"] for rec in stack.emu.records() if rec["llmId"] in ids
                }
                changed = sum(1 for i in ids if after.get(i) != before.get(i))
                self._settle()  # any extra PUT would land here
                out = cast(RotationRound, self._close(w))
                bodies = [e["body"] for e in stack.emu.stats()["log"] if e["method"] == "PUT" and e["ts"] >= since_ms]
                out.update(
                    rotate_s=rotate_s,
                    entries_changed=changed,
                    n=len(ids),
                    puts_with_credentials_only=sum(
                        1 for b in bodies if isinstance(b, dict) and set(b) == {"credentials"}
                    ),
                )
                self.rotated += len(ids)
                rounds.append(out)
                self.say(
                    f"   rotation {r}: {changed}/{len(ids)} new fingerprints, last PUT {rotate_s:.2f}s after the "
                    f"Secret update; registry {out['registry']}"
                )
            out_delete = self._delete(watch, ns, names)
        except BaseException:
            stack.stop_operator()
            raise
        finally:
            watch.stop()
        times = [x["rotate_s"] for x in rounds]
        return {
            "n": s.rotation,
            "rounds": rounds,
            "rotate_s": times,
            "rotate_median_s": statistics.median(times),
            "puts": [x["registry"]["PUT"] for x in rounds],
            "delete": out_delete,
        }
