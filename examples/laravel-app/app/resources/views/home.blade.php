<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Laravel example app</title></head>
<body>
<h1>Notes</h1>
<p>{{ $notes }} notes, release {{ $release }}.</p>
</body>
</html>
