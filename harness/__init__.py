"""What the tests, the benchmarks and the load tests share: a real server on a free port (`server`), MNIST test
digits as clients send them (`digits`), synthetic phone photos (`photos`) and the docs' generated sections
(`report`). Installed with the project (`pip install -e .`): imported, never reached through sys.path."""
