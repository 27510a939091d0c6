"""Checks run before anything starts, so that the usual failures (no Java, jars not
fetched) are reported with the command that fixes them instead of a Java stack trace."""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from stack.errors import StackError

ROOT = Path(__file__).resolve().parent.parent
POM = ROOT / "flink-conf" / "pom.xml"
JARS_DIR = ROOT / "jars"
FETCH_HINT = "Fetch them with: make jars   (runs mvn -f flink-conf/pom.xml package)"
_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def java_version() -> int:
    java = shutil.which("java")
    if java is None:
        raise StackError("Java is not installed or not on PATH. Kafka and Flink need Java 17: "
                         "apt-get install openjdk-17-jre-headless")
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        raise StackError(f"cannot read the Java version from `java -version`:\n{out}")
    major = int(match.group(1))
    if major == 1:  # "1.8.0" style
        major = int(match.group(2) or 0)
    if major < 17:
        raise StackError(f"Java {major} found; Kafka 4 and Flink 2 need Java 17 or newer "
                         "(set JAVA_HOME or put a newer java first on PATH)")
    return major


def required_flink_jars() -> list[str]:
    """File names of the connector jars, read from the pom so it stays the one list."""
    tree = ET.parse(POM)
    props = {el.tag.split("}")[1]: (el.text or "")
             for el in tree.getroot().find("m:properties", _NS)}

    def expand(text: str) -> str:
        return re.sub(r"\$\{([^}]+)\}", lambda m: props.get(m.group(1), m.group(0)), text)

    names = []
    for item in tree.getroot().iter(f"{{{_NS['m']}}}artifactItem"):
        artifact = item.find("m:artifactId", _NS).text
        version = expand(item.find("m:version", _NS).text)
        names.append(f"{artifact}-{version}.jar")
    return names


def flink_jars(jars_dir: Path | None = None) -> list[Path]:
    """Absolute paths of the connector jars; raises naming every missing one."""
    jars_dir = jars_dir or JARS_DIR / "flink"
    paths = [jars_dir / name for name in required_flink_jars()]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise StackError(f"missing jar(s) in {jars_dir}: {', '.join(missing)}. {FETCH_HINT}")
    return paths


def kafka_classpath() -> str:
    kafka_dir = JARS_DIR / "kafka"
    if not any(kafka_dir.glob("kafka_2.13-*.jar")):
        raise StackError(f"the Kafka broker jars are missing in {kafka_dir}. {FETCH_HINT}")
    return f"{kafka_dir}/*"
