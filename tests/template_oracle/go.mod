module runner.test/templateoracle

go 1.19
