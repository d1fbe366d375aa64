"""The README's code, as the tests that run it read it."""
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def section_blocks(title: str):
    """(the first ```bash block, the first ```python block) of the README section `## {title}`."""
    text = README.read_text()
    section = text[text.index(f"## {title}"):].split("\n## ")[0]
    bash = section.split("```bash\n")[1].split("```")[0]
    python = section.split("```python\n")[1].split("```")[0]
    return bash, python
