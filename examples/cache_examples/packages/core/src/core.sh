core_greet() { echo "hello from core $(cat "$(dirname "$0")/../src/version.txt")"; }
