from django.core.management.base import BaseCommand, CommandError

from console.evals.simulator import Faults, make_server


class Command(BaseCommand):
    help = (
        "Serve an OpenAI-compatible model simulator on loopback (see console/evals/simulator.py)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8100)
        parser.add_argument("--latency-ms", type=float, default=0.0)
        parser.add_argument("--jitter-ms", type=float, default=0.0)
        parser.add_argument(
            "--error-rate", type=float, default=0.0, help="share of requests answered 429 or 500"
        )
        parser.add_argument(
            "--hang-rate", type=float, default=0.0, help="share of requests that hang"
        )
        parser.add_argument(
            "--rate-limit-rps", type=float, default=0.0, help="429 with Retry-After above this rate"
        )
        parser.add_argument("--verbose", action="store_true")

    def handle(self, *args, **o):
        for name in ("error_rate", "hang_rate"):
            if not 0 <= o[name] <= 1:
                raise CommandError(f"--{name.replace('_', '-')} must be between 0 and 1")
        faults = Faults(
            latency_ms=o["latency_ms"],
            jitter_ms=o["jitter_ms"],
            error_rate=o["error_rate"],
            hang_rate=o["hang_rate"],
            rate_limit_rps=o["rate_limit_rps"],
        )
        server = make_server(o["host"], o["port"], faults, verbose=o["verbose"])
        self.stdout.write(f"LLM simulator on http://{o['host']}:{o['port']}/v1 ({faults})")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
