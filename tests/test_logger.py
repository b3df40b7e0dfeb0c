import io

from rl_rmsprop.logger import Logger, flatten, markdown_table


def test_flatten_and_markdown():
    flat = flatten({"run": {"seed": 1}, "optim": {"lr": 0.1, "name": "rmsprop"}})
    assert flat == {"run.seed": 1, "optim.lr": 0.1, "optim.name": "rmsprop"}
    table = markdown_table(flat)
    assert table.splitlines()[0] == "| option | value |" and "| optim.lr | 0.1 |" in table


def test_plain_progress_lines_every_tenth_and_quiet(tmp_path):
    out = io.StringIO()
    logger = Logger(tmp_path / "a", total_steps=1000, stream=out)
    for step in range(0, 1001, 50):
        logger.progress(step, 123.0, None if step < 500 else 42.0)
    logger.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 11 and "n/a" in lines[0] and "42.0" in lines[-1] and "SPS" in lines[0]
    quiet = io.StringIO()
    logger = Logger(tmp_path / "b", total_steps=1000, quiet=True, stream=quiet)
    logger.progress(500, 1.0, 1.0)
    logger.message("hello")
    logger.close()
    assert quiet.getvalue() == ""


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_one_live_line_with_a_bar(tmp_path):
    out = FakeTerminal()
    logger = Logger(tmp_path / "tty", total_steps=100, stream=out)
    logger.progress(50, 1000.0, 12.5)
    logger.progress(100, 1000.0, 20.0)  # the last step is always drawn
    logger.close()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n")
    assert "[##########          ]" in text and "[####################]" in text
    assert "20.0" in text and "SPS" in text
